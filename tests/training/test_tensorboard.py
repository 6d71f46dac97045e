"""Each training run logs TensorBoard events to its own RUN/tensorboard, also when one process trains several
runs (an experiment): the directory travels with the run, not through the process environment."""

from __future__ import annotations

import os

from .conftest import tiny_cfg


def scalars(log_dir) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of every event file in `log_dir`."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def test_two_runs_in_one_process_log_to_their_own_dirs(tiny_dir, rows_file, tmp_path, monkeypatch):
    from delia.training import run_train

    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    runs = {}
    for name, steps in (("first", 2), ("second", 3)):
        out = tmp_path / name
        run_train(tiny_cfg(rows_file, out, tiny_dir, max_steps=steps, save_steps=10, report_to=["tensorboard"]))
        runs[name] = scalars(out / "tensorboard")
        assert "TENSORBOARD_LOGGING_DIR" not in os.environ  # nothing leaks to the next run
    # every logged step of each run is in its own directory, and only its own (logging_steps 1, first step too)
    assert [s for s, _ in runs["first"]["train/loss"]] == [1, 2]
    assert [s for s, _ in runs["second"]["train/loss"]] == [1, 2, 3]
    assert not (tmp_path / "first" / "checkpoints" / "runs").exists()  # not the Trainer's default place either

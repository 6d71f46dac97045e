"""Crash-safe checkpoints: sealing, falling back past a half-written checkpoint, SIGKILL at several points."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import delia
from delia.training import run_train
from delia.training.checkpoints import SEAL, pick_checkpoint, problem, seal, total_train_loss

from .conftest import Interrupt, tiny_cfg, write_rows

HERE = Path(__file__).resolve().parent


def _fake_ckpt(root: Path, step: int, sealed: bool = True) -> Path:
    d = root / "checkpoints" / f"checkpoint-{step}"
    d.mkdir(parents=True)
    (d / "adapter_model.safetensors").write_bytes(b"x" * 100)
    (d / "optimizer.pt").write_bytes(b"y" * 50)
    (d / "trainer_state.json").write_text("{}")
    if sealed:
        seal(d, step)
    return d


def test_seal_records_every_file_and_detects_damage(tmp_path):
    d = _fake_ckpt(tmp_path, 2)
    info = json.loads((d / SEAL).read_text())
    assert info == {"step": 2, "files": {"adapter_model.safetensors": 100, "optimizer.pt": 50,
                                         "trainer_state.json": 2}}
    assert problem(d) is None
    (d / "optimizer.pt").write_bytes(b"y" * 20)  # truncated after sealing
    assert problem(d) == "optimizer.pt has 20 bytes, the seal says 50"
    (d / "optimizer.pt").unlink()  # a rotation cut short
    assert "optimizer.pt is missing" in problem(d)


def test_pick_skips_a_half_written_latest_checkpoint(tmp_path, caplog):
    _fake_ckpt(tmp_path, 2)
    _fake_ckpt(tmp_path, 4, sealed=False)
    with caplog.at_level(logging.WARNING):
        assert pick_checkpoint(tmp_path).name == "checkpoint-2"
    assert "checkpoint-4: incomplete checkpoint, no delia_checkpoint.json" in caplog.text
    assert "resuming from the previous one" in caplog.text
    assert not (tmp_path / "checkpoints" / "checkpoint-4").exists()


def test_pick_gives_none_when_nothing_is_complete_and_leaves_files_without_remove(tmp_path):
    _fake_ckpt(tmp_path, 2, sealed=False)
    assert pick_checkpoint(tmp_path, remove=False) is None
    assert (tmp_path / "checkpoints" / "checkpoint-2").exists()
    assert pick_checkpoint(tmp_path) is None and not (tmp_path / "checkpoints" / "checkpoint-2").exists()


def test_unsealed_runs_from_before_seals_use_trainer_state(tmp_path):
    good = _fake_ckpt(tmp_path, 2, sealed=False)
    torn = _fake_ckpt(tmp_path, 4, sealed=False)
    (torn / "trainer_state.json").write_text('{"glob')
    assert pick_checkpoint(tmp_path, sealed=False) == good


def test_total_train_loss_covers_the_steps_before_a_resume():
    history = [{"step": 1, "loss": 4.0}, {"step": 3, "loss": 2.0}, {"step": 5, "loss": 9.0}]
    # steps 1..3: 4 + 2 * 2 = 8; steps 4..6 (after the resume at 3) average 1.0
    assert total_train_loss(history, 3, 1.0, 6) == pytest.approx((8 + 3) / 6)
    assert total_train_loss(history, 0, 1.5, 6) == 1.5  # not resumed: the Trainer's own mean
    assert total_train_loss([{"step": 1, "loss": 4.0}], 3, 1.0, 6) == 1.0  # history gap: warn, keep own


def test_resume_falls_back_past_a_half_written_checkpoint(trained, tiny_dir, rows_file, tmp_path, caplog):
    """Killed while checkpoint-4 was written: the rerun removes it, resumes from checkpoint-2 and ends with the
    uninterrupted run's adapter and train_loss."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_cfg(rows_file, out, tiny_dir), callbacks=[Interrupt(at=3)])
    ck2 = out / "checkpoints" / "checkpoint-2"
    assert (ck2 / SEAL).exists()
    half = out / "checkpoints" / "checkpoint-4"
    shutil.copytree(ck2, half)
    (half / SEAL).unlink()
    (half / "optimizer.pt").write_bytes((half / "optimizer.pt").read_bytes()[:100])
    with caplog.at_level(logging.WARNING):
        result = run_train(tiny_cfg(rows_file, out, tiny_dir))
    assert "checkpoint-4: incomplete checkpoint" in caplog.text
    assert result.resumed_from.endswith("checkpoint-2") and result.global_step == 4
    reference = trained("tied", "fp32")[0]  # the same config (tiny_cfg is fp32), never interrupted
    want = load_file(str(reference.run_dir / "adapter_model.safetensors"))
    got = load_file(str(out / "adapter_model.safetensors"))
    for k in want:
        assert torch.equal(got[k], want[k]), k
    # the loss of all 4 steps, not only of steps 3-4 after the resume
    assert result.train_loss == pytest.approx(reference.train_loss, rel=1e-6)
    assert json.loads((out / "delia_run.json").read_text())["train_loss"] == result.train_loss


def test_second_trainer_on_one_directory_is_refused(tiny_dir, rows_file, tmp_path):
    from delia.files import LockError, locked_dir

    out = tmp_path / "run"
    with locked_dir(out):
        with pytest.raises(LockError, match="another delia process is writing this training run"):
            run_train(tiny_cfg(rows_file, out, tiny_dir))


# ---------------------------------------------------------------- SIGKILL of a real `delia train` process

ARGS = ["batch_size=4", "micro_batch_size=2", "max_steps=4", "warmup_steps=0", "learning_rate=1e-2",
        "max_length=96", "report_to=[none]", "save_steps=2", "threads=1", "precision=fp32"]


def _train(point: str, data: Path, out: Path, model: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(HERE / "killpoint.py"), point, "train", "--data", str(data), "--out", str(out),
           "--model", model, *ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_sigkill_at_any_point_then_rerun_gives_bit_identical_weights(tiny_dir, tmp_path):
    """Kill `delia train` (lora_dropout 0.05, so the RNG state matters) at four points; each rerun finishes by
    itself and writes exactly the adapter of an uninterrupted run."""
    data = write_rows(tmp_path / "train.jsonl")
    ref = _train("none", data, tmp_path / "ref", tiny_dir)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = load_file(str(tmp_path / "ref" / "adapter_model.safetensors"))
    want_loss = json.loads((tmp_path / "ref" / "delia_run.json").read_text())["train_loss"]
    for point, resumes_from in [("step3", "checkpoint-2"), ("mid-save", "checkpoint-2"),
                                ("before-seal", "checkpoint-2"), ("final", "checkpoint-4")]:
        out = tmp_path / point
        killed = _train(point, data, out, tiny_dir)
        assert killed.returncode == -9, (point, killed.stderr[-2000:])
        assert not (out / "delia_run.json").exists()
        rerun = _train("none", data, out, tiny_dir)
        assert rerun.returncode == 0, (point, rerun.stderr[-3000:])
        assert "Traceback" not in rerun.stderr
        meta = json.loads((out / "delia_run.json").read_text())
        assert meta["resumed_from"].endswith(resumes_from) and meta["global_step"] == 4, point
        got = load_file(str(out / "adapter_model.safetensors"))
        assert got.keys() == want.keys()
        for k in want:
            assert torch.equal(got[k], want[k]), (point, k)
        assert meta["train_loss"] == pytest.approx(want_loss, rel=1e-6), point
        assert sorted(p.name for p in (out / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]

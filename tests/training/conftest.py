"""Fixtures for training tests: a tiny chat data set using `<sep>`, and finished runs on tied/untied tiny models.

The runs are module-scoped and shared by several tests so the suite trains each model once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import TrainerCallback

from delia.training import TrainConfig


def write_rows(path: Path, n: int = 8) -> Path:
    """n short chat rows whose prompts use `<sep>`; responses are short sums."""
    rows = [{"id": f"r{i}", "messages": [
        {"role": "user", "content": f"What is {i} plus {i + 3}? Answer in <sep>."},
        {"role": "assistant", "content": f"{{'sum': {2 * i + 3}}}"}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def tiny_cfg(data: Path, out: Path, model: str, **over) -> TrainConfig:
    """A fast config: 4 rows per step in micro-batches of 2, high lr so a few steps move things."""
    kw = dict(data=str(data), out=str(out), model=model, batch_size=4, micro_batch_size=2, max_steps=4,
              warmup_steps=0, learning_rate=1e-2, lora_dropout=0.0, max_length=96, report_to=["none"],
              save_steps=2)
    kw.update(over)
    return TrainConfig(**kw)


class Capture(TrainerCallback):
    """Keeps the trained model at the end of training, and the initial `<sep>` rows at the start."""

    def __init__(self) -> None:
        self.model = None

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.model = model


class Interrupt(TrainerCallback):
    """Raises at the end of step `at`, like a Ctrl-C after the checkpoint before it was written."""

    def __init__(self, at: int) -> None:
        self.at = at

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.at:
            raise KeyboardInterrupt(f"simulated interruption at step {self.at}")


@pytest.fixture(scope="module")
def rows_file(tmp_path_factory) -> Path:
    return write_rows(tmp_path_factory.mktemp("data") / "train.jsonl")


def _run(model_dir: str, rows_file: Path, tmp_path_factory, name: str):
    from delia.training import run_train

    cap = Capture()
    out = tmp_path_factory.mktemp(name) / "run"
    result = run_train(tiny_cfg(rows_file, out, model_dir), callbacks=[cap])
    return result, cap.model


@pytest.fixture(scope="module")
def tied_run(tiny_dir, rows_file, tmp_path_factory):
    return _run(tiny_dir, rows_file, tmp_path_factory, "tied")


@pytest.fixture(scope="module")
def untied_run(tiny_untied_dir, rows_file, tmp_path_factory):
    return _run(tiny_untied_dir, rows_file, tmp_path_factory, "untied")


@pytest.fixture(params=["tied", "untied"])
def run(request):
    """(TrainResult, trained PeftModel, base model dir) for each kind of model."""
    result, model = request.getfixturevalue(f"{request.param}_run")
    base = request.getfixturevalue("tiny_dir" if request.param == "tied" else "tiny_untied_dir")
    return result, model, base

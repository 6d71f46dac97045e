"""Fixtures for training tests: a tiny chat data set using `<sep>`, and finished runs on tied/untied tiny models.

Every run forces its precision (fp32, or bf16 autocast over fp32 master weights) instead of `auto`, so each
machine exercises both paths whether or not its CPU has native bf16. The runs are module-scoped and shared by
several tests so the suite trains each (model, precision) once.
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


PRECISIONS = ["fp32", "bf16"]


def tiny_cfg(data: Path, out: Path, model: str, **over) -> TrainConfig:
    """A fast config: 4 rows per step in micro-batches of 2, high lr so a few steps move things; fp32 unless
    `precision` says otherwise (never `auto`, which depends on the machine)."""
    kw = dict(data=str(data), out=str(out), model=model, batch_size=4, micro_batch_size=2, max_steps=4,
              warmup_steps=0, learning_rate=1e-2, lora_dropout=0.0, max_length=96, report_to=["none"],
              save_steps=2, precision="fp32")
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


@pytest.fixture(scope="module")
def trained(tiny_dir, tiny_untied_dir, rows_file, tmp_path_factory):
    """trained(kind, precision) -> (TrainResult, trained PeftModel): each run trained once per module.

    kind: tied | untied (token_side unset: both rows) | tied-input | untied-input (token_side input)."""
    from delia.training import run_train

    runs: dict[tuple[str, str], tuple] = {}

    def get(kind: str, precision: str):
        if (kind, precision) not in runs:
            cap = Capture()
            model_dir = tiny_dir if kind.startswith("tied") else tiny_untied_dir
            side = {"token_side": "input"} if kind.endswith("-input") else {}
            out = tmp_path_factory.mktemp(f"{kind}-{precision}") / "run"
            result = run_train(tiny_cfg(rows_file, out, model_dir, precision=precision, **side), callbacks=[cap])
            runs[kind, precision] = result, cap.model
        return runs[kind, precision]

    return get


KINDS = ["tied", "untied", "tied-input", "untied-input"]


@pytest.fixture(params=[(k, p) for k in KINDS for p in PRECISIONS], ids=lambda kp: "-".join(kp))
def run(request, trained):
    """(TrainResult, trained PeftModel, base model dir, precision) for each kind of run and precision."""
    kind, precision = request.param
    result, model = trained(kind, precision)
    base = request.getfixturevalue("tiny_dir" if kind.startswith("tied") else "tiny_untied_dir")
    return result, model, base, precision

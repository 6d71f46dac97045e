"""Model selection in training: validation every few steps, early stopping, the best step kept, resume.

Every run forces its precision (fp32, and bf16 autocast over fp32 master weights), so both paths run on every
machine whatever its CPU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import TrainerCallback

from delia.config import ConfigError
from delia.training import read_run_meta, run_train
from delia.training.config import ValidationConfig
from delia.training.validation import best_entry, interval_of, is_perfect, rank

from .conftest import PRECISIONS, Interrupt, tiny_cfg, write_rows


def validation_files(root: Path) -> dict:
    """Validation prompts for the sum rows: {input, output} rows and two phrasings with the token."""
    root.mkdir(parents=True, exist_ok=True)
    rows = [{"id": f"v{i}", "input": f"What is {i} plus {i + 3}?", "output": json.dumps({"sum": str(2 * i + 3)})}
            for i in range(20, 23)]
    (root / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "phrasings.txt").write_text("Answer in <sep>.\nReply as <sep>.\n")
    return {"eval": {"task": "json", "data": str(root / "valid.jsonl"),
                     "custom": {"template": "{context} {instruction}", "instructions": "unseen:all",
                                "unseen_file": str(root / "phrasings.txt"), "special_tokens": ["<sep>"],
                                "keys": ["sum"]}},
            "every": 2, "max_new_tokens": 8}


class Weights(TrainerCallback):
    """The trainable tensors at the end of every step."""

    def __init__(self) -> None:
        self.at: dict[int, dict[str, torch.Tensor]] = {}

    def on_step_end(self, args, state, control, model=None, **kwargs):
        self.at[state.global_step] = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


def saved_adapter(run_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter_model.safetensors"))


def lora_tensor(weights: dict[str, torch.Tensor]) -> torch.Tensor:
    name = next(n for n in sorted(weights) if "lora_B" in n)
    return weights[name]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("valdata")
    return write_rows(root / "train.jsonl"), validation_files(root / "valid")


@pytest.mark.parametrize("precision", PRECISIONS)
def test_best_step_is_kept_and_training_stops_early(tiny_dir, data, tmp_path, precision):
    rows, validation = data
    weights = Weights()
    # the tiny model never answers the sums: every validation scores 0, so the first one stays the best and
    # patience 2 stops the run at the third validation (step 6 of 12)
    cfg = tiny_cfg(rows, tmp_path / "run", tiny_dir, max_steps=12, precision=precision,
                   validation={**validation, "patience": 2})
    result = run_train(cfg, callbacks=[weights])
    history = json.loads((tmp_path / "run" / "validation.json").read_text())
    assert [e["step"] for e in history["history"]] == [2, 4, 6] and history["stopped_early"]
    assert result.global_step == 6 and history["best_step"] == 2
    assert all(e["n"] == 6 and e["metric"] == "task_valid" for e in history["history"])
    meta = read_run_meta(tmp_path / "run")
    assert meta["selection"]["best_step"] == 2 and meta["selection"]["last_step"] == 6
    # the saved adapter is step 2's weights, not step 6's (which moved: lr 1e-2)
    kept = lora_tensor(saved_adapter(tmp_path / "run"))
    at2, at6 = lora_tensor(weights.at[2]), lora_tensor(weights.at[6])
    assert not torch.equal(at2, at6)
    assert torch.equal(kept.to(at2.dtype), at2)


def test_min_steps_holds_off_the_stop(tiny_dir, data, tmp_path):
    rows, validation = data
    cfg = tiny_cfg(rows, tmp_path / "run", tiny_dir, max_steps=12,
                   validation={**validation, "patience": 1, "min_steps": 8})
    result = run_train(cfg)
    assert result.global_step == 8  # would stop at 4 without min_steps


class Scripted:
    """A validator whose scores are given per call (the real one needs a model that answers)."""

    def __init__(self, scores: list[float]) -> None:
        self.scores = list(scores)

    def score(self, model) -> dict:
        s = self.scores.pop(0)
        return {"score": s, "metric": "label_accuracy", "task_valid": 1.0, "label_accuracy": s, "n": 6,
                "seconds": 0.0}


def test_a_perfect_validation_stops_at_once_and_is_kept(tiny_dir, data, tmp_path, monkeypatch):
    import delia.training.validation as V

    rows, validation = data
    monkeypatch.setattr(V, "build_validator", lambda cfg, tok, run_dir: Scripted([0.5, 1.0, 1.0, 1.0]))
    cfg = tiny_cfg(rows, tmp_path / "run", tiny_dir, max_steps=12, validation={**validation, "patience": 10})
    result = run_train(cfg)
    history = json.loads((tmp_path / "run" / "validation.json").read_text())
    # step 4 is perfect: patience 10 would have run to step 12 and kept step 4 all the same (ties: earlier step)
    assert [e["step"] for e in history["history"]] == [2, 4] and history["stopped_early"]
    assert result.global_step == 4 and history["best_step"] == 4


def test_perfect_means_the_maximum_with_every_reply_valid():
    assert is_perfect({"metric": "label_accuracy", "score": 1.0, "task_valid": 1.0})
    assert not is_perfect({"metric": "label_accuracy", "score": 1.0, "task_valid": 0.9})
    assert not is_perfect({"metric": "label_accuracy", "score": 0.99, "task_valid": 1.0})
    assert is_perfect({"metric": "chrf", "score": 100.0}) and not is_perfect({"metric": "chrf", "score": 99.0})
    assert not is_perfect({"metric": "label_accuracy", "score": None, "task_valid": 1.0})


def test_resume_keeps_the_validation_history(tiny_dir, data, tmp_path):
    rows, validation = data
    cfg = tiny_cfg(rows, tmp_path / "a", tiny_dir, max_steps=8, validation={**validation, "patience": 10})
    straight = run_train(cfg)
    cut = tiny_cfg(rows, tmp_path / "b", tiny_dir, max_steps=8, validation={**validation, "patience": 10})
    with pytest.raises(KeyboardInterrupt):
        run_train(cut, callbacks=[Interrupt(at=5)])  # validated at 2 and 4 (with checkpoints), killed in 5
    resumed = run_train(cut)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-4")
    a, b = (json.loads((tmp_path / d / "validation.json").read_text())["history"] for d in ("a", "b"))
    assert [e["step"] for e in b] == [e["step"] for e in a] == [2, 4, 6, 8]
    assert [e["score"] for e in b] == [e["score"] for e in a]
    assert straight.global_step == resumed.global_step == 8
    assert torch.allclose(lora_tensor(saved_adapter(tmp_path / "a")), lora_tensor(saved_adapter(tmp_path / "b")),
                          atol=1e-6)


def test_validation_config_is_checked():
    with pytest.raises(ConfigError, match="validation.eval: give at least task and data"):
        ValidationConfig(eval={"task": "json"})
    with pytest.raises(ConfigError, match="validation.metric"):
        ValidationConfig(eval={"task": "json", "data": "x"}, metric="loss")
    with pytest.raises(ConfigError, match="validation.every"):
        ValidationConfig(eval={"task": "json", "data": "x"}, every=0)


def test_bad_validation_rows_fail_before_training(tiny_dir, data, tmp_path):
    rows, validation = data
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "input": "x", "output": "not json"}\n')
    cfg = tiny_cfg(rows, tmp_path / "run", tiny_dir, validation={**validation, "eval": {**validation["eval"],
                                                                                        "data": str(bad)}})
    with pytest.raises(Exception, match=rf"{bad}:1"):
        run_train(cfg)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_ranking_prefers_score_then_task_valid_then_the_earlier_step():
    h = [{"step": 2, "score": 0.5, "task_valid": 0.9}, {"step": 4, "score": 0.7, "task_valid": 0.8},
         {"step": 6, "score": 0.7, "task_valid": 1.0}, {"step": 8, "score": 0.7, "task_valid": 1.0},
         {"step": 10, "score": float("nan"), "task_valid": 1.0}]
    assert best_entry(h)["step"] == 6
    assert rank({"step": 1, "score": None}) < rank({"step": 9, "score": 0.0})
    assert best_entry([]) is None
    assert interval_of(100, None) == 10 and interval_of(7, None) == 2 and interval_of(100, 3) == 3

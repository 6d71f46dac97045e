"""Model selection during training: generate on validation prompts every few steps, score them with the task's
own metric, stop when the score stops improving, and keep the best step's weights as the run's model.

The validation prompts (scored by `delia.evaluation.validation`) are an evaluation config (`eval`: the fields
of `delia eval`, so the task builds the
rows, parses and scores the replies exactly as the test evaluation will), read once when training starts. What
is compared is the task's headline: label accuracy for tasks with labels (an invalid reply counts as wrong),
chrF for text tasks, task-valid otherwise; task-valid breaks ties, and among equal scores the earliest step wins
(the model closest to the base). Training stops after `patience` validations without improvement, or at once
when a validation is perfect (the metric's maximum, every reply task-valid): no later step could be chosen.

Resumable: the history is RUN/validation.json, and the best weights so far RUN/validation/best-STEP.safetensors
(only the trainable tensors: LoRA and the new tokens' rows). A checkpoint is saved at every validation step, so a
resumed run finds the history up to its checkpoint and the best weights among them.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from delia.config import ConfigError
from delia.training.artifacts import write_json
from delia.training.config import ValidationConfig

log = logging.getLogger(__name__)

# The best value each metric can take (fractions; chrF in points): a validation that reaches it, with every reply
# task-valid, cannot be beaten by a later step (ties go to the earlier step), so training stops there.
METRIC_MAX = {"label_accuracy": 1.0, "task_valid": 1.0, "macro_f1": 1.0, "chrf": 100.0}
VALIDATION_FILE = "validation.json"
BEST_DIR = "validation"


def interval_of(total_steps: int, every: int | None) -> int:
    """Steps between validations: `every`, else about a tenth of the run (at least 2)."""
    return every or max(2, math.ceil(total_steps / 10))


def rank(entry: dict[str, Any]) -> tuple[float, float, int]:
    """Sort key of a history entry: higher is better (score, then task-valid, then an earlier step)."""
    return (_num(entry.get("score")), _num(entry.get("task_valid")), -int(entry["step"]))


def is_perfect(entry: dict[str, Any]) -> bool:
    """The entry scores the metric's maximum with every reply task-valid: no later step can rank above it."""
    top = METRIC_MAX.get(entry.get("metric"))
    valid = entry.get("task_valid", 1.0)
    return top is not None and _num(entry.get("score")) >= top - 1e-9 and _num(valid) >= 1.0 - 1e-9


def best_entry(history: list[dict[str, Any]]) -> dict[str, Any] | None:
    return max(history, key=rank) if history else None


def _num(v: Any) -> float:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else -math.inf


def build_validator(cfg: ValidationConfig, tokenizer, run_dir: Path):
    """The scorer of the validation prompts: `delia.evaluation.validation.Validator`, found through the
    registry (evaluation loads trained runs, so training reaches it as a plug-in, not by importing it)."""
    from delia.registry import registry

    return registry("train validator").get("generation")(cfg, tokenizer, run_dir)


class ValidationCallback(TrainerCallback):
    """Validates every `interval` steps (and at the last step), keeps the best weights, stops early."""

    def __init__(self, cfg: ValidationConfig, validator, run_dir: Path,
                 history: list[dict[str, Any]]) -> None:
        self.cfg, self.validator, self.run_dir = cfg, validator, Path(run_dir)
        self.history = list(history)
        self.interval = 0
        self.stopped_early = False

    # -- state on disk
    def _best_file(self, step: int) -> Path:
        return self.run_dir / BEST_DIR / f"best-{step}.safetensors"

    def _write(self) -> None:
        best = best_entry(self.history)
        write_json(self.run_dir / VALIDATION_FILE, {"interval": self.interval, "patience": self.cfg.patience,
                                                    "best_step": best and best["step"], "history": self.history,
                                                    "stopped_early": self.stopped_early})

    def on_train_begin(self, args, state, control, **kwargs):
        self.interval = interval_of(state.max_steps, self.cfg.every)
        # resumed: what was validated after the checkpoint is validated again
        self.history = [e for e in self.history if e["step"] <= state.global_step]

    def on_step_end(self, args, state, control, model=None, **kwargs):
        step = state.global_step
        if step % self.interval and step < state.max_steps:
            return control
        entry = {"step": step, "epoch": state.epoch, **self.validator.score(model)}
        self.history.append(entry)
        best = best_entry(self.history)
        if best is entry:
            save_trainable(model, self._best_file(step))
        since = sum(1 for e in self.history if e["step"] > best["step"])
        log.info("validation at step %d: %s %.3f (task-valid %.3f; best %.3f at step %d) in %.1fs", step,
                 entry["metric"], _num(entry["score"]), _num(entry.get("task_valid")), _num(best["score"]),
                 best["step"], entry["seconds"])
        perfect = is_perfect(best)
        if (since >= self.cfg.patience or perfect) and step >= self.cfg.min_steps and step < state.max_steps:
            self.stopped_early = True
            control.should_training_stop = True
            why = "a perfect validation score" if perfect else f"no improvement for {since} validations"
            log.info("early stop at step %d: %s (best: step %d)", step, why, best["step"])
        elif step < state.max_steps:
            control.should_save = True  # a checkpoint beside every validation keeps history and weights in step
        if state.is_world_process_zero:
            self._write()
        return control

    def on_save(self, args, state, control, **kwargs):
        # the checkpoint at this step holds everything up to it: best files other than the best one can go
        best = best_entry(self.history)
        if best is not None and state.is_world_process_zero:
            for f in (self.run_dir / BEST_DIR).glob("best-*.safetensors"):
                if f != self._best_file(best["step"]):
                    f.unlink(missing_ok=True)
        return control

    def restore_best(self, model) -> dict[str, Any] | None:
        """Load the best step's weights into `model` (a no-op when the last step is the best); the summary."""
        best = best_entry(self.history)
        if best is None:
            return None
        last = max(e["step"] for e in self.history)
        if best["step"] != last:
            load_trainable(model, self._best_file(best["step"]))
        self._write()
        return {"best_step": best["step"], "last_step": last, "metric": best["metric"], "score": best["score"],
                "task_valid": best.get("task_valid"), "validations": len(self.history),
                "stopped_early": self.stopped_early, "prompts": best.get("n")}


def save_trainable(model, path: Path) -> None:
    """The trainable tensors of `model` (LoRA, token rows) to a safetensors file, written atomically."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(path)


def load_trainable(model, path: Path) -> None:
    """Copy the tensors of `save_trainable`'s file back into `model`'s trainable parameters (all of them)."""
    import torch
    from safetensors.torch import load_file

    if not path.is_file():
        raise ConfigError(f"{path}: the best validation step's weights are missing; rerun training from scratch")
    saved = load_file(str(path))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if set(saved) != set(params):
        raise ConfigError(f"{path}: holds other tensors than the model trains ({len(saved)} vs {len(params)})")
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(saved[n].to(p.device, p.dtype))


def read_history(run_dir: Path) -> list[dict[str, Any]]:
    import json

    path = Path(run_dir) / VALIDATION_FILE
    try:
        return list(json.loads(path.read_text()).get("history", [])) if path.is_file() else []
    except (ValueError, AttributeError):
        return []

"""Crash-safe Trainer checkpoints: a checkpoint counts only once sealed, and resume takes the newest sealed one.

The Trainer writes RUN/checkpoints/checkpoint-N/ file by file (adapter, optimizer, scheduler, RNG state,
trainer_state.json) and then deletes older checkpoints, so a kill or a full disk can leave a directory that
looks like a checkpoint but cannot be loaded ("Can't find a valid checkpoint" on every rerun). Rather than
re-implementing the Trainer's save, `CheckpointSeal.on_save` runs right after it: it fsyncs every file and
then writes `delia_checkpoint.json` (each file's size) atomically, last. `pick_checkpoint` walks the
checkpoints newest first, removes (with a warning) any without a seal or whose files no longer match it,
and returns the newest complete one, or None for a fresh start.

The seal callback also asks the Trainer to log at every save and at the last step, so the loss of every step
is in the log history a checkpoint carries; `total_train_loss` uses it to report a resumed run's loss over
all its steps, not only those after the resume.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from delia.files import fsync_dir, write_json_atomic

log = logging.getLogger(__name__)

SEAL = "delia_checkpoint.json"
SEALED_MARK = "# checkpoints: sealed"  # in train_config.yaml of runs whose checkpoints carry seals


def seal(ckpt: Path, step: int) -> None:
    """fsync every file of `ckpt`, then write its seal (file -> size) atomically."""
    files: dict[str, int] = {}
    for p in sorted(ckpt.rglob("*")):
        if p.is_file() and p.name != SEAL:
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[str(p.relative_to(ckpt))] = p.stat().st_size
    write_json_atomic(ckpt / SEAL, {"step": step, "files": files})
    fsync_dir(ckpt.parent)


def problem(ckpt: Path, sealed: bool = True) -> str | None:
    """Why `ckpt` cannot be resumed from, or None when it is complete.

    Args:
        sealed: the run seals its checkpoints; False for runs written before seals existed, where a
            checkpoint counts when its trainer_state.json (written last of the Trainer's files) parses.
    """
    if not sealed:
        try:
            json.loads((ckpt / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return "no readable trainer_state.json (interrupted while saving)"
        return None
    try:
        info = json.loads((ckpt / SEAL).read_text())
    except (OSError, ValueError):
        return f"no {SEAL} (interrupted while saving)"
    for name, size in info.get("files", {}).items():
        p = ckpt / name
        if not p.is_file():
            return f"{name} is missing (interrupted while deleting an old checkpoint?)"
        if p.stat().st_size != size:
            return f"{name} has {p.stat().st_size} bytes, the seal says {size}"
    return None


def checkpoints(run_dir: Path) -> list[Path]:
    """RUN/checkpoints/checkpoint-N directories, oldest first."""
    found = [p for p in (run_dir / "checkpoints").glob("checkpoint-*")
             if p.is_dir() and p.name.split("-")[-1].isdigit()]
    return sorted(found, key=lambda p: int(p.name.split("-")[-1]))


def pick_checkpoint(run_dir: Path, sealed: bool = True, remove: bool = True) -> Path | None:
    """The newest complete checkpoint, or None; incomplete ones are removed (`remove`) with a warning.

    Older incomplete ones (a rotation cut short) are removed too, so the Trainer's own rotation never
    counts them.
    """
    chosen = None
    for ckpt in reversed(checkpoints(run_dir)):
        why = problem(ckpt, sealed)
        if why is None:
            chosen = chosen or ckpt
            continue
        if remove:
            log.warning("%s: incomplete checkpoint, %s; removing it%s", ckpt, why,
                        "" if chosen else " and resuming from the previous one (or from the start)")
            shutil.rmtree(ckpt, ignore_errors=True)
    return chosen


class CheckpointSeal(TrainerCallback):
    """Seals each checkpoint after the Trainer saved it, and makes every save step (and the last) a log step."""

    def on_step_end(self, args, state, control, **kwargs):
        if control.should_save or control.should_training_stop:
            control.should_log = True
        return control

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if ckpt.is_dir():
                seal(ckpt, state.global_step)
        return control


def total_train_loss(history: list[dict[str, Any]], resumed_step: int, run_loss: float | None,
                     global_step: int) -> float | None:
    """Mean loss over all `global_step` steps of a run resumed at `resumed_step`.

    The Trainer's own `training_loss` averages only the steps of the current call. The steps before the
    resume are in the checkpoint's log history (logged at every save, see CheckpointSeal), each log entry
    the mean over the steps since the previous one.
    """
    if not resumed_step or run_loss is None or global_step <= 0:
        return run_loss
    total, prev = 0.0, 0
    for e in sorted((e for e in history if "loss" in e and e.get("step", 0) <= resumed_step),
                    key=lambda e: e["step"]):
        total += e["loss"] * (e["step"] - prev)
        prev = e["step"]
    if prev != resumed_step:
        log.warning("the log history covers %d of the %d steps before the resume; train_loss covers the "
                    "steps after it only", prev, resumed_step)
        return run_loss
    return (total + run_loss * (global_step - resumed_step)) / global_step

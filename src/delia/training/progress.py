"""A Trainer callback that adds tokens/s to every log entry and keeps a JSON training log in RUN/."""

from __future__ import annotations

import time
from pathlib import Path

from transformers import TrainerCallback

from delia.training.artifacts import write_json


class TrainLog(TrainerCallback):
    """Records loss, learning rate and throughput per logged step into `path` (rewritten atomically).

    It must run before the other callbacks (the runner inserts it first) so that `tokens_per_s` reaches
    TensorBoard and the progress printout too. Throughput counts every non-pad token the model processed
    (prompt and completion), from TRL's running `num_tokens`.
    """

    def __init__(self, path: str | Path, history: list[dict] | None = None) -> None:
        self.path = Path(path)
        self.entries: list[dict] = list(history or [])
        self._t = self._tokens = None

    def on_train_begin(self, args, state, control, **kwargs):
        # On resume, drop entries past the checkpoint we restart from; they will be logged again.
        self.entries = [e for e in self.entries if e.get("step", 0) <= state.global_step]
        self._t, self._tokens = time.perf_counter(), None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs is None:
            return
        now = time.perf_counter()
        tokens = logs.get("num_tokens")
        if tokens is not None and self._tokens is not None and now > self._t:
            logs["tokens_per_s"] = round((tokens - self._tokens) / (now - self._t), 1)
        if tokens is not None:
            self._tokens, self._t = tokens, now
        if not state.is_world_process_zero:
            return
        self.entries.append({"step": state.global_step, "epoch": state.epoch, "time": time.time(),
                             **{k: v for k, v in logs.items() if isinstance(v, (int, float))}})
        write_json(self.path, self.entries)

"""The scorer behind training's model selection (`delia.training.validation`): the validation prompts built once
from an evaluation config, greedy replies from the model in training, scored by the task as `delia eval` scores
them. Registered as the `train validator` plug-in `generation` (training finds it through the registry)."""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from delia.config import ConfigError
from delia.registry import registry

VALID_FLOOR = 16  # the smallest generation budget of a validation reply


class Validator:
    """The validation prompts, built once, and a scorer of the model in training."""

    def __init__(self, cfg: Any, tokenizer, run_dir: Path) -> None:
        from delia.config import from_dict
        from delia.evaluation.config import EvalConfig
        from delia.task import get_task

        self.cfg = cfg  # delia.training.config.ValidationConfig
        self.eval_cfg = from_dict(EvalConfig, {**cfg.eval, "out": str(Path(run_dir) / "validation"),
                                                  "bootstrap": 0}, where="validation.eval")
        self.task = get_task(self.eval_cfg.task)
        self.task.check(self.eval_cfg)
        self.rows = self.task.rows(self.eval_cfg)
        if not self.rows:
            raise ConfigError(f"validation.eval.data {self.eval_cfg.data}: no prompts to validate on")
        from delia.evaluation import budget as B

        # twice the gold replies' p99 length (at least 16 tokens), not the test's 256-token floor: a reply cut
        # here counts as wrong either way, and the model's early replies run to whatever budget they get
        golds, _ = B.gold_replies(self.rows, self.task.gold_fallback(self.eval_cfg))
        lengths = [len(tokenizer(g, add_special_tokens=False)["input_ids"]) for g in golds]
        self.max_new_tokens = cfg.max_new_tokens or B.choose(lengths, floor=VALID_FLOOR)["max_new_tokens"]
        self.stop_fn = self.task.stop_fn(self.eval_cfg)
        self.tokenizer = tokenizer

    def score(self, model) -> dict[str, Any]:
        """Greedy replies to every validation prompt, scored: {score, metric, task_valid, ..., seconds}.

        The adapter is merged into the weights for the generation and unmerged after (a LoRA-wrapped forward
        generates ~1.6x slower), in the master weights' dtype: under bf16 autocast every decoding step casts
        every weight again, 3-4x slower than fp32 for these short replies (measured, docs/RESULTS.md).
        """
        from delia.generation import GenParams, generate

        t0 = time.perf_counter()
        was_training = model.training
        merged = hasattr(model, "merge_adapter")
        model.eval()
        if merged:
            model.merge_adapter()
        try:
            gens = generate(model, self.tokenizer, [r.prompt for r in self.rows],
                            GenParams(max_new_tokens=self.max_new_tokens), batch_size=self.cfg.batch_size,
                            stop_fn=self.stop_fn)
        finally:
            if merged:
                model.unmerge_adapter()
            model.train(was_training)
        preds = [self.task.predict(r, g, self.eval_cfg) for r, g in zip(self.rows, gens)]
        sets = self.task.metrics(preds, self.eval_cfg)["sets"]
        merged = _pooled(sets, len(preds))
        metric = self.metric_name(merged)
        return {"score": merged.get(metric), "metric": metric, **merged, "n": len(preds),
                "budget_hits": sum(g.finish_reason == "length" for g in gens),
                "seconds": round(time.perf_counter() - t0, 2)}

    def metric_name(self, values: dict[str, Any]) -> str:
        if self.cfg.metric != "auto":
            return self.cfg.metric
        for name in ("label_accuracy", "chrf"):
            if name in values:
                return name
        return "task_valid"


def _pooled(sets: dict[str, Any], n: int) -> dict[str, float]:
    """Each metric averaged over the sets, weighted by their rows (the validation prompts are usually one set)."""
    out: dict[str, float] = {}
    for name in ("task_valid", "label_accuracy", "macro_f1", "chrf"):
        vals = [(v[name]["value"], v[name]["n"]) for v in sets.values() if isinstance(v.get(name), dict)]
        if vals and all(isinstance(x, (int, float)) and math.isfinite(x) for x, _ in vals):
            out[name] = sum(x * k for x, k in vals) / max(1, sum(k for _, k in vals))
    return out




registry("train validator").add("generation", Validator, help="greedy replies to the validation prompts, scored by "
                                                              "the task")

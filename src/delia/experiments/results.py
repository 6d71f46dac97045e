"""Flatten what a run's steps saved (eval predictions.jsonl / metrics.json, training delia_run.json) into one
metrics record; which per-set metrics exist is the task's metric schema (`delia.task`). A task that can
(halu) recomputes its scores from predictions.jsonl (`Task.rescore`), so an experiment finished before a metric
existed gets it on the next `delia experiment` call (finished steps skip)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from delia.task import get_task


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def load_predictions(eval_dir: Path) -> list[dict[str, Any]]:
    """An evaluation's predictions.jsonl rows (with outcome fields newer than the run, `Task.enrich`); [] when
    absent."""
    path = Path(eval_dir) / "predictions.jsonl"
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):  # "\n" only: rows may hold U+2028
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{i}: not valid JSON ({e.msg})") from None
    return get_task(_eval_settings(path.parent)["task"]).enrich(rows)


def _eval_settings(eval_dir: Path) -> dict[str, Any]:
    """The bootstrap settings and budget an evaluation ran with (its config.yaml / metrics.json)."""
    cfg_path = eval_dir / "config.yaml"
    cfg = (yaml.safe_load(cfg_path.read_text()) or {}) if cfg_path.exists() else {}
    return {"n_boot": cfg.get("bootstrap", 1000), "seed": cfg.get("seed", 0), "level": cfg.get("ci_level", 0.95),
            "max_new_tokens": (cfg.get("generation") or {}).get("max_new_tokens"), "task": cfg.get("task", "halu")}


def _flatten_sets(out: dict[str, Any], m: dict[str, Any], task: str) -> None:
    """Per set: each metric of the task's schema with its interval, n, failure and finish counts, budget-hit
    rate; robustness across phrasings; the seen-unseen gap."""
    schema = get_task(task).metric_schema()
    for s, v in m.get("sets", {}).items():
        for k in (spec.name for spec in schema):
            if isinstance(v.get(k), dict):
                out[f"{s}.{k}"] = v[k]["value"]
                out[f"{s}.{k}.ci_low"] = v[k].get("ci_low")
                out[f"{s}.{k}.ci_high"] = v[k].get("ci_high")
                if "n" in v[k]:  # (a majority-class floor {label, accuracy} has none)
                    out[f"{s}.n"] = v[k]["n"]
        for code, n in (v.get("failures") or {}).items():
            out[f"{s}.failure.{code}"] = n
        for reason, n in (v.get("finish_reasons") or {}).items():
            out[f"{s}.finish.{reason}"] = n
        if v.get("budget_hits"):
            out[f"{s}.budget_hit_rate"] = v["budget_hits"]["share"]
    for s, r in m.get("robustness", {}).items():
        for name in (spec.name for spec in schema if spec.robustness):
            for k in ("min", "max", "spread", "n_phrasings"):
                if k in r.get(name, {}):
                    out[f"{s}.{name}.phrasing_{k}"] = r[name][k]
    for k, v in (m.get("seen_unseen_gap") or {}).items():
        out[f"gap.{k}"] = v


def collect(dirs: dict[str, Path]) -> dict[str, Any]:
    """Scalar metrics (dotted names) plus per-layer L2 lists, from the named step directories.

    Args:
        dirs: step name ("test", "valid", "train", "drift") -> its directory.
    Returns:
        e.g. {"seen.format_accuracy": 0.4, "seen.format_accuracy.ci_low": ..., "l2.mean.middle": ...,
        "valid.loss": ..., "train.loss": ..., "l2_layers": {"json": [...]}}.
    """
    out: dict[str, Any] = {}
    test = _load(dirs["test"] / "metrics.json") if "test" in dirs else None
    preds = load_predictions(dirs["test"]) if "test" in dirs else []
    if test or preds:
        settings = _eval_settings(dirs["test"])
        task = (test or {}).get("task") or settings["task"]
        rescored = get_task(task).rescore(preds, settings["n_boot"], settings["seed"], settings["level"])
        _flatten_sets(out, rescored or test or {}, task)
        budget = (test or {}).get("budget") or {}
        out["test.max_new_tokens"] = budget.get("max_new_tokens", settings["max_new_tokens"])
        test = test or {}
        hidden = test.get("hidden") or {}
        for w, vals in (hidden.get("summary") or {}).items():
            for k, v in vals.items():
                out[f"l2.{w}.{k}"] = v
        if "l2" in hidden:
            out["l2_layers"] = hidden["l2"]
        speed = test.get("speed") or {}
        out["test.examples_per_s"] = speed.get("examples_per_s")
        out["test.precision"] = (test.get("model") or {}).get("dtype")  # what the evaluated model computed in
    valid = _load(dirs["valid"] / "metrics.json") if "valid" in dirs else None
    if valid:
        for agg in (valid.get("scoring") or {}).values():
            out["valid.loss"] = agg.get("loss")
            out["valid.state_space"] = agg.get("state_space_exp_entropy_geomean")
            out["valid.state_space_n90"] = agg.get("state_space_n90_geomean")
            out["valid.first_token_nll"] = agg.get("first_token_nll_mean")
            out["valid.rows"] = agg.get("rows")
    drift = _load(dirs["drift"] / "metrics.json") if "drift" in dirs else None
    if drift:  # per-query values stay in the step's drift.jsonl (for a report's bootstrap)
        for k in ("drift_nll", "drift_nll_base", "leak_rate", "drift_n"):
            out[k] = drift.get(k)
        out["drift.precision"] = drift.get("dtype")
    run = _load(dirs["train"] / "delia_run.json") if "train" in dirs else None
    if run:
        out["train.loss"] = run.get("train_loss")
        out["train.steps"] = run.get("global_step")
        out["train.rows"] = (run.get("data") or {}).get("rows")
        out["train.seconds"] = run.get("train_seconds")
        sel = run.get("selection") or {}
        if sel:  # model selection by validation (TrainConfig.validation): the step kept and its score
            out["train.best_step"] = sel.get("best_step")
            out["train.valid_metric"] = sel.get("metric")
            out["train.valid_score"] = sel.get("score")
            out["train.valid_task_valid"] = sel.get("task_valid")
            out["train.stopped_early"] = sel.get("stopped_early")
    return out


# ---------------------------------------------------------------- reading an experiment back

PAPER_ORDER = ["original", "plain", "random_init", "mean_init", "icl", "ctg", "dipmt", "fact_based", "dmt", "neftune",
               "cit", "delia", "w_all", "wo_diverse", "wo_diversified", "wo_all"]
# per-prompt 0/1 outcomes of an enriched halu prediction, by metric name
ROW_METRICS = {
    "task_valid": lambda r: r["task_valid"],
    "format_accuracy": lambda r: r["parsed"],
    "format_accuracy_strict": lambda r: r["strict"],
    "label_accuracy": lambda r: r["label"] is not None and r["label"] == r["gold_label"],
}


class Results:
    """results.json plus each run's saved predictions: pick runs, read per-prompt outcomes."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        path = self.root / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no results; run `delia experiment CONFIG.yaml` first")
        self.rows: list[dict[str, Any]] = json.loads(path.read_text())
        self.methods = sorted({r["method"] for r in self.rows},
                              key=lambda m: PAPER_ORDER.index(m) if m in PAPER_ORDER else 99)
        self.sizes = sorted({r["size"] for r in self.rows if r["size"] is not None})
        self.ratios = sorted({r["ratio"] for r in self.rows if r["ratio"] is not None})
        self._preds: dict[str, list[dict[str, Any]]] = {}
        self._by_set: dict[tuple[str | None, str | None], list[dict[str, Any]]] = {}

    def pick(self, method: str, size: int | None = None, ratio: float | None = None) -> list[dict[str, Any]]:
        """The runs (one per seed) of `method` at a grid point; axes the method does not use match anything.

        An axis left as None is the method's own largest value, so a method run only at some ratios (DMT at
        ratio 1, an ablation at one ratio) is shown at the largest it has, not left out.
        """
        mine = [r for r in self.rows if r["method"] == method]
        sizes = sorted({r["size"] for r in mine if r["size"] is not None})
        size = sizes[-1] if size is None and sizes else size
        mine = [r for r in mine if r["size"] in (None, size)]
        ratios = sorted({r["ratio"] for r in mine if r["ratio"] is not None})
        ratio = ratios[-1] if ratio is None and ratios else ratio
        return [r for r in mine if r["ratio"] in (None, ratio)]

    def mean(self, runs: list[dict[str, Any]], metric: str) -> float | None:
        vals = [r["metrics"][metric] for r in runs if r["metrics"].get(metric) is not None]
        return float(sum(vals) / len(vals)) if vals else None

    def sets(self) -> list[str]:
        """Instruction sets with halu scores: seen, unseen, then the others by name."""
        names = {k.split(".")[0] for r in self.rows for k in r["metrics"]
                 if k.endswith((".format_accuracy", ".task_valid")) and not k.startswith(("gap.", "valid."))}
        return sorted(names, key=lambda s: (s != "seen", s != "unseen", s))

    def predictions(self, run: dict[str, Any]) -> list[dict[str, Any]]:
        """The run's test predictions (enriched), read once per evaluation step."""
        step = run["steps"].get("test")
        if step is None:
            return []
        if step not in self._preds:
            self._preds[step] = load_predictions(self.root / step)
        return self._preds[step]

    def set_rows(self, run: dict[str, Any], set_name: str) -> list[dict[str, Any]]:
        """The run's predictions in one instruction set (split once per evaluation step)."""
        step = run["steps"].get("test")
        if (step, None) not in self._by_set:
            self._by_set[(step, None)] = []
            for p in self.predictions(run):
                self._by_set.setdefault((step, p.get("set")), []).append(p)
        return self._by_set.get((step, set_name), [])

    def keyed(self, run: dict[str, Any], set_name: str, metric: str) -> dict[tuple[str, str], float]:
        """(example id, instruction id) -> 0/1 outcome of `metric` for one run and set."""
        fn = ROW_METRICS[metric]
        return {(str(p.get("example_id", i)), str(p.get("instruction_id", ""))): float(bool(fn(p)))
                for i, p in enumerate(self.set_rows(run, set_name))}

    def labelled(self, runs: list[dict[str, Any]], set_name: str) -> bool:
        rows = [p for r in runs for p in self.set_rows(r, set_name)]
        return bool(rows) and all(p.get("gold_label") is not None for p in rows)

"""Flatten what a run's steps saved (eval metrics.json, training delia_run.json) into one metrics record."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HALU_KEYS = ("format_accuracy", "format_accuracy_strict", "label_accuracy", "label_f1")
TRANSLATION_KEYS = ("bleu", "chrf++", "bleurt", "comet")


def _load(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def collect(dirs: dict[str, Path]) -> dict[str, Any]:
    """Scalar metrics (dotted names) plus per-layer L2 lists, from the named step directories.

    Args:
        dirs: step name ("test", "valid", "train") -> its directory.
    Returns:
        e.g. {"seen.format_accuracy": 0.4, "seen.format_accuracy.ci_low": ..., "l2.mean.middle": ...,
        "valid.loss": ..., "train.loss": ..., "l2_layers": {"json": [...]}}.
    """
    out: dict[str, Any] = {}
    test = _load(dirs["test"] / "metrics.json") if "test" in dirs else None
    if test:
        for s, m in test.get("sets", {}).items():
            for k in (*HALU_KEYS, *TRANSLATION_KEYS):
                if isinstance(m.get(k), dict):
                    out[f"{s}.{k}"] = m[k]["value"]
                    out[f"{s}.{k}.ci_low"] = m[k].get("ci_low")
                    out[f"{s}.{k}.ci_high"] = m[k].get("ci_high")
                    out[f"{s}.n"] = m[k].get("n")
        for s, r in test.get("robustness", {}).items():
            fa = r.get("format_accuracy", {})
            for k in ("min", "max", "spread", "n_phrasings"):
                if k in fa:
                    out[f"{s}.format_accuracy.phrasing_{k}"] = fa[k]
        for k, v in (test.get("seen_unseen_gap") or {}).items():
            out[f"gap.{k}"] = v
        hidden = test.get("hidden") or {}
        for w, vals in (hidden.get("summary") or {}).items():
            for k, v in vals.items():
                out[f"l2.{w}.{k}"] = v
        if "l2" in hidden:
            out["l2_layers"] = hidden["l2"]
        speed = test.get("speed") or {}
        out["test.examples_per_s"] = speed.get("examples_per_s")
    valid = _load(dirs["valid"] / "metrics.json") if "valid" in dirs else None
    if valid:
        for agg in (valid.get("scoring") or {}).values():
            out["valid.loss"] = agg.get("loss")
            out["valid.state_space"] = agg.get("state_space_exp_entropy_geomean")
            out["valid.state_space_n90"] = agg.get("state_space_n90_geomean")
            out["valid.first_token_nll"] = agg.get("first_token_nll_mean")
            out["valid.rows"] = agg.get("rows")
    run = _load(dirs["train"] / "delia_run.json") if "train" in dirs else None
    if run:
        out["train.loss"] = run.get("train_loss")
        out["train.steps"] = run.get("global_step")
        out["train.rows"] = (run.get("data") or {}).get("rows")
        out["train.seconds"] = run.get("train_seconds")
    return out


def predictions(eval_dir: Path, set_name: str, key: str = "parsed") -> list[float]:
    """Per-row 0/1 outcomes of one instruction set from an evaluation's predictions.jsonl (for pooled CIs)."""
    path = eval_dir / "predictions.jsonl"
    if not path.exists():
        return []
    vals = []
    for line in path.read_text(encoding="utf-8").split("\n"):  # "\n" only: rows may hold U+2028
        if line.strip():
            p = json.loads(line)
            if p.get("set") == set_name and key in p:
                vals.append(float(bool(p[key])))
    return vals

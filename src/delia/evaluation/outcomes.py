"""What each halu reply means for the task (valid? which label? why not?) and the per-set aggregates.

Pure functions of the fields a predictions.jsonl row already holds (`parsed`, `strict`, `pred_label`, `reason`,
`finish_reason`), so a finished evaluation is re-scored from its saved predictions alone, with no model.

A reply is **task-valid** when it parses to a dict with exactly the task's keys and its label is one of the
allowed labels (after the parser's normalisation: case, trailing `.`/`!`). Its failure reason is the first
that applies: `cut_at_budget` (it does not parse and generation stopped at `max_new_tokens`, so the budget
may have decided it), then the parser's reason (`no_brace`, `unclosed`, `unparseable`, `not_dict`), then
`wrong_keys` (a dict with other keys: the paper's lenient rule counts it), then `bad_label`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from delia.evaluation import metrics as M

# the last three are the generic tasks' (delia.tasks.scoring): one order for every summary table
FAILURES = ("ok", "cut_at_budget", "no_brace", "unclosed", "unparseable", "not_dict", "wrong_keys", "bad_label",
            "bad_value", "empty", "not_a_label", "other")
FINISH = ("stop", "length")
BUDGET_WARN = 0.02  # a set whose share of replies cut at the budget exceeds this gets a warning line
# headline first; the label metrics need gold labels
HALU_METRICS = ["task_valid", "format_accuracy", "format_accuracy_strict", "label_accuracy", "majority_class",
                "label_precision", "label_recall", "label_f1", "label_f1_no", "label_macro_f1"]
UNLABELLED = HALU_METRICS[:3]
PER_PHRASING = ["task_valid", "format_accuracy", "format_accuracy_strict", "label_accuracy"]


def parse_failure(reason: str | None) -> str:
    """The short code of a `parse_output` reason (None = parsed)."""
    if reason is None:
        return "ok"
    for code, prefix in (("no_brace", "no '{'"), ("unclosed", "the first"), ("unparseable", "the earliest"),
                         ("not_dict", "parsed to")):
        if reason.startswith(prefix):
            return code
    return "other"


def outcome(p: dict[str, Any]) -> dict[str, Any]:
    """`task_valid`, `label` (None unless task-valid), `failure` and `budget_hit` of one saved prediction."""
    parsed, strict, label = bool(p.get("parsed")), bool(p.get("strict")), p.get("pred_label")
    valid = parsed and strict and label is not None
    cut = p.get("finish_reason") == "length"
    if valid:
        failure = "ok"
    elif not parsed:
        failure = "cut_at_budget" if cut else parse_failure(p.get("reason") or "")
    else:
        failure = "wrong_keys" if not strict else "bad_label"
    return {"task_valid": valid, "label": label if valid else None, "failure": failure, "budget_hit": cut}


def enrich(preds: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predictions with their outcome fields (re)computed, so old and new predictions.jsonl score the same."""
    return [{**p, **outcome(p)} for p in preds]


def counts(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Failure reasons (in FAILURES order, zeros left out) and finish reasons of `rows`."""
    fail = Counter(r["failure"] for r in rows) if rows and "failure" in rows[0] else Counter()
    finish = Counter(r.get("finish_reason") or "unknown" for r in rows)
    return {"failures": {k: fail[k] for k in FAILURES if fail[k]},
            "finish_reasons": {k: finish[k] for k in (*FINISH, *sorted(set(finish) - set(FINISH))) if finish[k]}}


def budget_hits(rows: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """How many replies stopped at the budget (finish_reason 'length'), and their share."""
    n = sum(r.get("finish_reason") == "length" for r in rows)
    return {"n": n, "share": n / len(rows) if rows else 0.0}


def halu_metrics(preds: Sequence[dict[str, Any]], n_boot: int = 1000, seed: int = 0,
                 level: float = 0.95) -> dict[str, Any]:
    """Per set (with cluster-bootstrap CIs), failure/finish counts, per phrasing, robustness, seen-unseen gap.

    Args:
        preds: predictions.jsonl rows (enriched here).
        n_boot, seed, level: the bootstrap (resampling examples; 0 = no intervals).
    """
    preds = enrich(preds)
    sets = list(dict.fromkeys(p["set"] for p in preds))
    out: dict[str, Any] = {"sets": {}, "per_instruction": {}, "robustness": {}}
    labelled = all(p.get("gold_label") is not None for p in preds)
    names = HALU_METRICS if labelled else UNLABELLED
    for s in sets:
        rows = [p for p in preds if p["set"] == s]
        out["sets"][s] = {n: M.interval(n, rows, n_boot, seed, level) for n in names}
        out["sets"][s].update(counts(rows))
        out["sets"][s]["budget_hits"] = budget_hits(rows)
        per = {}
        for iid in dict.fromkeys(p["instruction_id"] for p in rows):
            irows = [p for p in rows if p["instruction_id"] == iid]
            per[iid] = {"n": len(irows), **{n: M.compute(n, irows) for n in PER_PHRASING if n in names}}
        out["per_instruction"][s] = per
        out["robustness"][s] = {n: M.summarize({k: v[n] for k, v in per.items()}) for n in PER_PHRASING
                                if n in names}
    if "seen" in out["robustness"] and "unseen" in out["robustness"]:
        out["seen_unseen_gap"] = {n: out["robustness"]["seen"][n]["mean"] - out["robustness"]["unseen"][n]["mean"]
                                  for n in out["robustness"]["seen"]}
    return out


def budget_warnings(sets: dict[str, dict[str, Any]], max_new_tokens: int | None, label: str = "") -> list[str]:
    """One line per set whose replies hit the budget more often than BUDGET_WARN."""
    lines = []
    for s, v in sets.items():
        hits = v.get("budget_hits") or {}
        if hits.get("share", 0) > BUDGET_WARN:
            n = round(hits["n"] / hits["share"])
            lines.append(f"{label}{s}: {hits['n']} of {n} replies ({100 * hits['share']:.1f}%) stopped at the budget "
                         f"(max_new_tokens {max_new_tokens if max_new_tokens is not None else '?'}); the budget, "
                         f"not the model, may decide these (raise generation.max_new_tokens)")
    return lines

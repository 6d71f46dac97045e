"""Parse, score and aggregate the generic tasks' replies (pure functions of the reply and a `Schema`).

json: the earliest {...} parsed as halu's replies are (`delia.evaluation.parsing.parse_output`); task-valid =
exactly the schema's keys and every constrained key holds an allowed value (compared normalised).
label: the reply's first non-empty line, normalised (strip, case-fold, surrounding quotes and punctuation
removed), must equal one normalised label of the set.
text: the stripped reply; task-valid = non-empty; exact match, chrF, BLEU (sacrebleu) against the reference.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from delia.data import DataError, Problem
from delia.evaluation import metrics as M
from delia.evaluation import outcomes
from delia.evaluation.parsing import parse_output
from delia.task import MetricSpec

MAX_VALUES = 10  # a json key with at most this many distinct gold values (some repeated) gets an allowed set
_PUNCT = " \t\r\n\"'`“”‘’.,;:!?()[]<>*"
FAILURES = outcomes.FAILURES


def norm(value: Any) -> str:
    """Case-folded text without surrounding whitespace, quotes and punctuation ('"Yes."' -> 'yes')."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    return str(value).strip(_PUNCT).casefold()


@dataclass
class Schema:
    """What a reply must be. `inferred` names the fields taken from the gold outputs, not the config."""

    task: str
    keys: list[str] = field(default_factory=list)
    values: dict[str, list[str]] = field(default_factory=dict)
    label_key: str | None = None
    labels: list[str] = field(default_factory=list)
    metrics: list[str] = field(default_factory=list)
    inferred: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> bool:
        return bool(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def infer(task: str, golds: list[tuple[str, str]], o: Any) -> Schema:
    """The schema from the options `o` (CustomTaskOptions), the unset parts inferred from (gold, FILE:LINE) pairs.

    Raises:
        DataError: a json gold output that does not parse to an object, naming its FILE:LINE.
    """
    s = Schema(task, metrics=list(o.metrics) if task == "text" else [])
    if task == "label":
        s.labels = list(o.labels) if o.labels else list(dict.fromkeys(g.strip() for g, _ in golds))
        s.inferred += [] if o.labels else ["labels"]
        return s
    if task != "json":
        return s
    parsed, problems = [], []
    for g, where in golds:
        p = parse_output(g)
        if not p.ok:
            file, _, line = where.rpartition(":")
            problems.append(Problem(file, int(line) if line.isdigit() else 0, f"gold output: {p.reason}", "output"))
        parsed.append(p.value or {})
    if problems:
        raise DataError(problems)
    s.keys = list(o.keys) if o.keys else [k for k in dict.fromkeys(k for v in parsed for k in v)
                                          if all(k in v for v in parsed)]
    if o.values is not None:
        s.values = {k: [str(x) for x in v] for k, v in o.values.items()}
    else:
        for k in s.keys:
            vals = [v[k] for v in parsed if k in v and isinstance(v[k], (str, int, float, bool))]
            distinct = list(dict.fromkeys(str(x).strip() if not isinstance(x, bool) else norm(x) for x in vals))
            # a free-text key of a small set also has few distinct values: only repeated values make a set
            if vals and len(distinct) <= MAX_VALUES and len(distinct) < len(vals):
                s.values[k] = distinct
    s.label_key = o.label_key or (next(iter(s.values)) if len(s.values) == 1 else None)
    if s.label_key:
        s.labels = s.values.get(s.label_key) or list(dict.fromkeys(str(v.get(s.label_key)) for v in parsed))
    s.inferred += [n for n, given in (("keys", o.keys), ("values", o.values), ("label_key", o.label_key))
                   if given is None]
    return s


def match_label(text: Any, labels: list[str]) -> str | None:
    """The label of `labels` whose normalised form equals the normalised `text`, else None."""
    n = norm(text)
    return next((lab for lab in labels if norm(lab) == n), None)


def gold_fields(s: Schema, gold: str) -> dict[str, Any]:
    """Row fields derived from the gold output (the gold label of labelled tasks)."""
    if s.task == "label":
        return {"gold_label": match_label(gold, s.labels)}
    if s.task == "json" and s.label_key:
        value = (parse_output(gold).value or {}).get(s.label_key)
        return {"gold_label": match_label(value, s.labels) if value is not None else None}
    return {}


def score(s: Schema, text: str, cut: bool, gold: str | None, gold_label: str | None) -> dict[str, Any]:
    """The outcome fields of one reply: task_valid, failure, budget_hit, plus the task's own."""
    if s.task == "json":
        out = _score_json(s, text)
    elif s.task == "label":
        line = next((ln for ln in text.splitlines() if ln.strip()), "")
        label = match_label(line, s.labels)
        out = {"reply": line.strip(), "label": label, "task_valid": label is not None,
               "failure": "ok" if label else ("empty" if not line.strip() else "not_a_label")}
    else:
        hyp, ref = text.strip(), (gold or "").strip()
        out = {"hyp": hyp, "ref": ref, "exact": hyp == ref, "task_valid": bool(hyp),
               "failure": "ok" if hyp else "empty"}
    if s.labelled:
        out["gold_label"] = gold_label
    if not out["task_valid"] and cut:
        out["failure"] = "cut_at_budget"
    return {**out, "budget_hit": cut}


def _score_json(s: Schema, text: str) -> dict[str, Any]:
    p = parse_output(text)
    value = p.value or {}
    wrong = sorted(set(map(str, value)) ^ set(s.keys)) if p.ok else []
    bad = {k: value[k] for k, allowed in s.values.items() if k in value and
           match_label(value[k], allowed) is None} if p.ok else {}
    valid = p.ok and not wrong and not bad
    failure = "ok" if valid else outcomes.parse_failure(p.reason) if not p.ok else \
        "wrong_keys" if wrong else "bad_value"
    label = match_label(value.get(s.label_key), s.labels) if valid and s.label_key else None
    return {"parsed": p.ok, "strict": p.ok and not wrong, "value": p.value, "method": p.method,
            "reason": p.reason, "wrong_keys": wrong, "bad_values": bad, "label": label, "task_valid": valid,
            "failure": failure}


def macro_f1(labels: list[str]) -> M.Metric:
    """Macro-F1 over `labels` as an additive Metric (tp, predicted, gold per class), so it bootstraps."""

    def stats(rows):
        return np.array([[f for c in labels for f in (r["label"] == c and r["gold_label"] == c, r["label"] == c,
                                                       r["gold_label"] == c)] for r in rows],
                        dtype=np.float64).reshape(len(rows), 3 * len(labels))

    def reduce(v):
        f1s = [M._f1(*v[3 * i:3 * i + 3]) for i in range(len(labels)) if v[3 * i + 1] + v[3 * i + 2] > 0]
        return float(np.mean(f1s)) if f1s else math.nan

    return M.Metric("macro_f1", "label", stats, reduce)


def per_class(rows: list[dict[str, Any]], labels: list[str]) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 and gold count per label (invalid replies predict nothing)."""
    out = {}
    for c in labels:
        tp = sum(r["label"] == c and r["gold_label"] == c for r in rows)
        pred, gold = sum(r["label"] == c for r in rows), sum(r["gold_label"] == c for r in rows)
        out[c] = {"precision": tp / pred if pred else math.nan, "recall": tp / gold if gold else math.nan,
                  "f1": M._f1(tp, pred, gold), "n_gold": gold}
    return out


def majority(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The most frequent gold label and the label accuracy of always answering it (the floor)."""
    counts = Counter(r["gold_label"] for r in rows if r["gold_label"] is not None)
    if not counts:
        return {"label": None, "accuracy": math.nan, "value": math.nan}
    label, n = counts.most_common(1)[0]
    return {"label": label, "accuracy": n / len(rows), "value": n / len(rows)}


def _names(s: Schema) -> tuple[list[Any], list[str]]:
    """(metrics with intervals, per-phrasing metric names)."""
    names: list[Any] = ["task_valid"] + (["format_accuracy"] if s.task == "json" else [])
    phrasing = ["task_valid"]
    if s.labelled:
        names += ["label_accuracy", macro_f1(s.labels)]
        phrasing.append("label_accuracy")
    if s.task == "text":
        names += s.metrics
        phrasing += ["chrf"] if "chrf" in s.metrics else []
    return names, phrasing


def metrics(s: Schema, preds: list[dict[str, Any]], n_boot: int = 1000, seed: int = 0,
            level: float = 0.95) -> dict[str, Any]:
    """Per set (with cluster-bootstrap intervals), per phrasing, robustness across phrasings, what was inferred."""
    names, phrasing = _names(s)
    out: dict[str, Any] = {"inferred": s.to_dict(), "sets": {}, "per_instruction": {}, "phrasings": {},
                           "robustness": {}}
    for st in dict.fromkeys(p["set"] for p in preds):
        rows = [p for p in preds if p["set"] == st]
        v = {getattr(n, "name", n): M.interval(n, rows, n_boot, seed, level) for n in names}
        if s.labelled:
            v["majority_class"] = majority(rows)
            v["per_class"] = per_class(rows, s.labels)
        fail = Counter(r["failure"] for r in rows)
        v["failures"] = {k: fail[k] for k in FAILURES if fail[k]}
        v["finish_reasons"] = outcomes.counts(rows)["finish_reasons"]
        v["budget_hits"] = outcomes.budget_hits(rows)
        out["sets"][st] = v
        per = {}
        for iid in dict.fromkeys(p["instruction_id"] for p in rows):
            irows = [p for p in rows if p["instruction_id"] == iid]
            per[iid] = {"n": len(irows), **{n: M.compute(n, irows) for n in phrasing}}
            out["phrasings"][iid] = {"set": st, **per[iid]}
        out["per_instruction"][st] = per
        out["robustness"][st] = {n: M.summarize({k: x[n] for k, x in per.items()}) for n in phrasing}
    if "seen" in out["robustness"] and "unseen" in out["robustness"]:
        out["seen_unseen_gap"] = {n: out["robustness"]["seen"][n]["mean"] - out["robustness"]["unseen"][n]["mean"]
                                  for n in out["robustness"]["seen"]}
    return out


def metric_schema(task: str) -> list[MetricSpec]:
    """Every per-set metric the task can report (label metrics only appear for labelled sets)."""
    specs = [MetricSpec("task_valid", "rate", True, True)]
    if task == "json":
        specs.append(MetricSpec("format_accuracy", "rate", True, False))
    if task in ("json", "label"):
        specs += [MetricSpec("label_accuracy", "rate", True, True), MetricSpec("macro_f1", "rate"),
                  MetricSpec("majority_class", "rate")]
    if task == "text":
        specs += [MetricSpec("exact", "rate"), MetricSpec("chrf", "score", True, True), MetricSpec("bleu", "score")]
    return specs

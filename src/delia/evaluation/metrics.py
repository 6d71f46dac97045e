"""Metrics as additive per-row statistics, so values and bootstrap intervals share one code path.

Each registered metric maps rows to an (n, k) array of per-row statistics whose column sums determine the
value (accuracy: [correct]; precision: [tp, predicted positive]; BLEU/chrF++: sacrebleu's sufficient
statistics). A bootstrap resample is then a multinomial count vector times that array: 1000 resamples of a
corpus BLEU cost one matrix product instead of 1000 corpus re-scorings.

Rows are dicts: halu rows carry `task_valid`, `parsed`, `strict`, `label`, `gold_label`; translation rows `hyp`, `ref`
(and `bleurt`/`comet` scores when computed).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from delia.registry import registry

POSITIVE = "yes"


@dataclass(frozen=True)
class Metric:
    """`stats(rows) -> (n, k)`; `reduce(column sums) -> value` (NaN when undefined, e.g. no positives)."""

    name: str
    task: str
    stats: Callable[[Sequence[dict[str, Any]]], np.ndarray]
    reduce: Callable[[np.ndarray], float]


METRICS = registry("metric")


def _add(m: Metric, help: str) -> None:
    METRICS.add(m.name, m, help=help)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else math.nan


def _col(rows, fn) -> np.ndarray:
    return np.array([[float(fn(r))] for r in rows], dtype=np.float64).reshape(len(rows), 1)


# ---------------------------------------------------------------- halu (formatted generation)
# Rows are enriched predictions (`delia.evaluation.outcomes.enrich`): `task_valid` (parses, exactly the task's
# keys, a label from the allowed set) and `label` (the label of a task-valid reply, else None), so a reply a
# user's schema would reject never counts as a right label.

def _mean_metric(name: str, task: str, fn: Callable[[dict], float], help: str) -> None:
    _add(Metric(name, task, lambda rows: np.column_stack([_col(rows, fn), np.ones((len(rows), 1))])
                if rows else np.zeros((0, 2)), lambda s: _ratio(s[0], s[1])), help)


_mean_metric("task_valid", "halu", lambda r: r["task_valid"],
             "headline: share of replies that parse to a dict with exactly the task's keys and a label from the "
             "allowed set")
_mean_metric("format_accuracy", "halu", lambda r: r["parsed"],
             "share of outputs whose earliest {...} parses to a dict (the paper's lenient accuracy)")
_mean_metric("format_accuracy_strict", "halu", lambda r: r["strict"],
             "share that parse to a dict with exactly the task's keys")
_mean_metric("label_accuracy", "halu", lambda r: r["label"] is not None and r["label"] == r["gold_label"],
             "share of task-valid replies with the gold label (invalid or unparsed replies count as wrong)")

LABELS = (POSITIVE, "no")


def _confusion(rows) -> np.ndarray:
    # per class (yes, no): tp, predicted (task-valid replies only), gold
    return np.array([[f(r, c) for c in LABELS for f in (lambda r, c: r["label"] == c and r["gold_label"] == c,
                                                         lambda r, c: r["label"] == c,
                                                         lambda r, c: r["gold_label"] == c)]
                     for r in rows], dtype=np.float64).reshape(len(rows), 3 * len(LABELS))


def _f1(tp: float, pred: float, gold: float) -> float:
    return _ratio(2 * tp, pred + gold)  # = 2TP / (2TP + FP + FN)


def _confusion_any(rows) -> np.ndarray:
    # _confusion over the labels that occur (gold, or predicted by a task-valid reply): any label set, not only
    # halu's yes/no; for halu the same classes, so the same macro-F1
    labels = sorted({r["gold_label"] for r in rows} | {r["label"] for r in rows if r["label"] is not None}, key=str)
    return np.array([[f(r, c) for c in labels for f in (lambda r, c: r["label"] == c and r["gold_label"] == c,
                                                         lambda r, c: r["label"] == c,
                                                         lambda r, c: r["gold_label"] == c)]
                     for r in rows], dtype=np.float64).reshape(len(rows), 3 * len(labels))


def _macro_f1(s: np.ndarray) -> float:
    # mean F1 over the classes that occur among the gold or predicted labels (sklearn's macro average)
    f1s = [_f1(*s[3 * i:3 * i + 3]) for i in range(len(s) // 3) if s[3 * i + 1] + s[3 * i + 2] > 0]
    return float(np.mean(f1s)) if f1s else math.nan


_add(Metric("label_precision", "halu", _confusion, lambda s: _ratio(s[0], s[1])),
     "precision of 'hallucination: yes' (undefined when nothing is predicted yes)")
_add(Metric("label_recall", "halu", _confusion, lambda s: _ratio(s[0], s[2])),
     "recall of 'hallucination: yes' (undefined when no gold yes)")
_add(Metric("label_f1", "halu", _confusion, lambda s: _f1(s[0], s[1], s[2])),
     "F1 of 'hallucination: yes' = 2TP / (2TP + FP + FN)")
_add(Metric("label_f1_no", "halu", _confusion, lambda s: _f1(s[3], s[4], s[5])), "F1 of 'hallucination: no'")
_add(Metric("label_macro_f1", "halu", _confusion_any, _macro_f1),
     "mean of the per-class F1 over the classes present among gold or predicted labels")


def class_scores(rows, label: str) -> dict[str, float]:
    """Precision, recall and F1 of one label (any label set; for halu's 'yes' = label_precision/recall/f1)."""
    tp = sum(r["label"] == label and r["gold_label"] == label for r in rows)
    pred = sum(r["label"] == label for r in rows)
    gold = sum(r["gold_label"] == label for r in rows)
    return {"precision": _ratio(tp, pred), "recall": _ratio(tp, gold), "f1": _f1(tp, pred, gold)}


def minority_label(rows) -> str | None:
    """The least frequent gold label (ties: the first by name); None without gold labels."""
    counts = Counter(r["gold_label"] for r in rows if r.get("gold_label") is not None)
    return min(sorted(counts, key=str), key=lambda c: counts[c]) if counts else None


def _gold_counts(rows) -> np.ndarray:
    # the gold labels present (not halu's yes/no only), so any label task's floor is right
    labels = sorted({r["gold_label"] for r in rows}, key=str)
    return np.array([[r["gold_label"] == c for c in labels] + [1] for r in rows],
                    dtype=np.float64).reshape(len(rows), len(labels) + 1)


_add(Metric("majority_class", "halu", _gold_counts, lambda s: _ratio(max(s[:-1]), s[-1])),
     "label accuracy of always answering the most frequent gold label of the evaluated rows (the floor)")


# ---------------------------------------------------------------- translation (sacrebleu)


def _sacre(metric_factory: Callable[[], Any]) -> tuple[Callable, Callable]:
    """(stats, reduce) from sacrebleu's own sufficient statistics (what its significance tests use)."""

    def stats(rows):
        if not rows:
            return np.zeros((0, 1))
        m = metric_factory()
        return np.asarray(m._extract_corpus_statistics([r["hyp"] for r in rows], [[r["ref"] for r in rows]]),
                          dtype=np.float64)

    def reduce(s):
        return float(metric_factory()._compute_score_from_stats([int(round(x)) for x in s]).score)

    return stats, reduce


def _bleu():
    from sacrebleu.metrics import BLEU

    return BLEU()


def _chrfpp():
    from sacrebleu.metrics import CHRF

    return CHRF(word_order=2)


_add(Metric("bleu", "translation", *_sacre(_bleu)), "corpus BLEU (sacrebleu defaults: 13a, 4-gram)")
_add(Metric("chrf++", "translation", *_sacre(_chrfpp)), "corpus chrF++ (sacrebleu CHRF, word_order=2)")


def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


_add(Metric("chrf", "text", *_sacre(_chrf)), "corpus chrF (sacrebleu CHRF defaults: character 6-grams, no words)")
_mean_metric("exact", "text", lambda r: r["exact"], "share of replies equal to the reference (after strip)")
_mean_metric("bleurt", "translation", lambda r: r["bleurt"], "mean BLEURT (needs a local checkpoint)")
_mean_metric("comet", "translation", lambda r: r["comet"], "mean COMET (needs a local checkpoint)")


# ---------------------------------------------------------------- values and intervals


def _metric(name: str | Metric) -> Metric:
    return name if isinstance(name, Metric) else METRICS.get(name)


def compute(name: str | Metric, rows: Sequence[dict[str, Any]]) -> float:
    """The metric's value on `rows` (NaN when undefined); `name` is registered, or a Metric built by a task."""
    m = _metric(name)
    s = m.stats(rows)
    return m.reduce(s.sum(0)) if len(s) else math.nan


def bootstrap(name: str | Metric, rows: Sequence[dict[str, Any]], n: int = 1000, seed: int = 0, level: float = 0.95,
              groups: Sequence[Any] | None = None) -> tuple[float, float, float]:
    """(value, low, high): percentile bootstrap, seeded; undefined resamples are left out.

    Args:
        name: registered metric name, or a Metric (e.g. a task's macro-F1 over its own labels).
        rows: per-prompt rows.
        n: number of resamples (0: no interval, low = high = NaN).
        seed: numpy seed.
        level: two-sided coverage.
        groups: a key per row (e.g. the example id): resample whole groups (a cluster bootstrap over
            examples, since one example's prompts under several phrasings are not independent).
    """
    m = _metric(name)
    s = m.stats(rows)
    if not len(s):
        return math.nan, math.nan, math.nan
    value = m.reduce(s.sum(0))
    if n <= 0:
        return value, math.nan, math.nan
    if groups is not None:  # per-group sums of the additive statistics
        _, inv = np.unique(np.asarray([str(g) for g in groups]), return_inverse=True)
        g = np.zeros((inv.max() + 1, s.shape[1]))
        np.add.at(g, inv, s)
        s = g
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(s), np.full(len(s), 1.0 / len(s)), size=n)
    vals = np.array([m.reduce(c) for c in counts @ s])
    vals = vals[~np.isnan(vals)]
    if not len(vals):
        return value, math.nan, math.nan
    a = (1 - level) / 2
    return value, float(np.quantile(vals, a)), float(np.quantile(vals, 1 - a))


def interval(name: str | Metric, rows: Sequence[dict[str, Any]], n: int = 1000, seed: int = 0,
             level: float = 0.95) -> dict[str, float | int]:
    """{value, ci_low, ci_high, n}: the metric with a cluster-bootstrap interval over example ids."""
    v, lo, hi = bootstrap(name, rows, n=n, seed=seed, level=level, groups=[r["example_id"] for r in rows])
    return {"value": v, "ci_low": lo, "ci_high": hi, "n": len(rows)}


def summarize(values: dict[str, float]) -> dict[str, float]:
    """Robustness summary of per-phrasing scores: mean, min, max, spread (max - min), std."""
    v = np.array([x for x in values.values() if not math.isnan(x)], dtype=np.float64)
    if not len(v):
        return {"n_phrasings": 0, "mean": math.nan, "min": math.nan, "max": math.nan, "spread": math.nan,
                "std": math.nan}
    return {"n_phrasings": int(len(v)), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
            "spread": float(v.max() - v.min()), "std": float(v.std(ddof=0))}

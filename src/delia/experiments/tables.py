"""The report's score tables, from each run's saved predictions: the headline beside the format rules, label
quality beside the majority class, failure and finish reasons, per-seed means with their spread, robustness
across phrasings. Every interval is the cluster bootstrap of `stats` (examples and seeds)."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import numpy as np

from delia.evaluation import metrics as M
from delia.evaluation.outcomes import BUDGET_WARN, FAILURES
from delia.experiments.compare import Group, md_table, interval
from delia.experiments.results import Results
from delia.experiments.stats import Interval


def pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def cell(iv: Interval) -> str:
    return "–" if math.isnan(iv.mean) else f"{pct(iv.mean)} [{pct(iv.low)}, {pct(iv.high)}]"


def _ratio(g: Group) -> str:
    return "–" if g.ratio is None else f"{g.ratio:g}"


def majority(res: Results, runs: list[dict[str, Any]], s: str) -> float:
    """Share of the most frequent gold label among the set's evaluated prompts (the label-accuracy floor)."""
    rows = next((res.set_rows(r, s) for r in runs if res.set_rows(r, s)), [])
    if not rows or any(p.get("gold_label") is None for p in rows):
        return math.nan
    return M.compute("majority_class", rows)


def _nanmean(v: list[float]) -> float:
    """Mean of the defined values (F1 is undefined on a seed with no gold or predicted positives)."""
    v = [x for x in v if not math.isnan(x)]
    return float(np.mean(v)) if v else math.nan


def per_seed(res: Results, g: Group, s: str, metric: str) -> list[float]:
    """The metric on each seed's own rows of set `s`."""
    out = []
    for r in g.runs:
        rows = res.set_rows(r, s)
        if rows and "task_valid" in rows[0] and (not metric.startswith("label") or res.labelled([r], s)):
            out.append(M.compute(metric, rows))
    return out


def main_table(res: Results, gs: list[Group], sets: list[str]) -> list[str]:
    """Headline per set; on the last set the format rules, label accuracy beside the majority class."""
    if not sets:
        return []
    last = sets[1] if len(sets) > 1 else sets[0]
    base = next((interval(res, g.runs, last, "task_valid").mean for g in gs if g.method == "original"), math.nan)
    maj = pct(majority(res, [r for g in gs for r in g.runs], last))
    relative = bool(base) and not math.isnan(base)  # the paper's relative gain; undefined over a base of 0
    rows = []
    for g in gs:
        head = interval(res, g.runs, last, "task_valid").mean
        imp = [f"{100 * (head / base - 1):+.1f}%" if not math.isnan(head) else "–"] if relative else []
        rows.append([g.method, _ratio(g), str(g.seeds), *(cell(interval(res, g.runs, s, "task_valid")) for s in sets),
                     cell(interval(res, g.runs, last, "format_accuracy_strict")),
                     cell(interval(res, g.runs, last, "format_accuracy")),
                     cell(interval(res, g.runs, last, "label_accuracy")) if res.labelled(g.runs, last) else "–",
                     maj, *imp])
    twins = [f"{g.label} = {g.twin_of}" for g in gs if g.twin_of]
    return (["## Main results: task-valid accuracy (%) by instruction set", "",
             "Task-valid (the headline) = the reply parses to a dict with exactly the task's keys and a label from "
             "the allowed set. Exact keys = parses with exactly the keys; lenient = the paper's rule (any dict). "
             "Label accuracy counts invalid replies as wrong; majority class = always answering the most frequent "
             "gold label. [low, high]: 95% cluster bootstrap over examples and seeds. Each method at its largest "
             "size.", ""] +
            md_table(["method", "ratio", "seeds", *(f"{s} task-valid" for s in sets), f"{last} exact keys",
                    f"{last} lenient (paper)", f"{last} label acc", "majority class",
                    *([f"vs original ({last})"] if relative else [])], rows) +
            ([""] + [f"Same evaluations (the planner shares their steps): {'; '.join(twins)}."] if twins else []))


def label_table(res: Results, gs: list[Group], sets: list[str]) -> list[str]:
    """Label accuracy [CI] beside the majority class, F1 and recall of the minority gold label (halu: 'yes'),
    macro-F1 (means over seeds)."""
    rows, minorities = [], []
    for s in sets:
        every = [r for g in gs for r in g.runs]
        maj = pct(majority(res, every, s))
        gold = next((res.set_rows(r, s) for r in every if res.set_rows(r, s)), [])
        rare = M.minority_label(gold)
        for g in gs:
            if g.twin_of or not res.labelled(g.runs, s):
                continue
            seeds = [res.set_rows(r, s) for r in g.runs if res.set_rows(r, s)]
            f1 = _nanmean([M.class_scores(x, rare)["f1"] for x in seeds])
            recall = _nanmean([M.class_scores(x, rare)["recall"] for x in seeds])
            rows.append([g.label, s, cell(interval(res, g.runs, s, "label_accuracy")), maj, str(rare), pct(f1),
                         pct(recall), pct(_nanmean(per_seed(res, g, s, "label_macro_f1")))])
            minorities.append(rare)
    if not rows:
        return []
    return (["## Label quality (%)", "",
             "Invalid replies count as wrong (and as no prediction for F1). Minority = the least frequent gold label "
             "of the set: its F1 and recall show whether a model learned the label or only the majority class. "
             "F1, recall and macro-F1 are means over seeds; majority class = the label accuracy of always answering "
             "the most frequent gold label.", ""] +
            md_table(["method", "set", "label acc", "majority class", "minority", "F1(minority)", "recall(minority)",
                      "macro-F1"], rows))


def failure_table(res: Results, gs: list[Group], sets: list[str]) -> tuple[list[str], list[str]]:
    """(table lines, "method / set" cells where more than 2% of replies stopped at the budget)."""
    stats: list[tuple[Group, str, Counter, Counter, int]] = []
    for g in gs:
        if g.twin_of:
            continue
        for s in sets:
            rows = [p for r in g.runs for p in res.set_rows(r, s)]
            if rows:
                stats.append((g, s, Counter(p.get("failure", "other") for p in rows),
                              Counter(p.get("finish_reason") or "unknown" for p in rows), len(rows)))
    if not stats:
        return [], []
    fails = [f for f in FAILURES if any(st[2][f] for st in stats)]
    finish = sorted({k for st in stats for k in st[3]}, key=lambda k: (k != "stop", k != "length", k))
    rows, cells = [], []
    for g, s, fc, fin, n in stats:
        share = fin["length"] / n
        if share > BUDGET_WARN:
            cells.append(f"{g.label} / {s} ({pct(share)}%)")
        rows.append([g.label, s, str(n), *(str(fc[f]) for f in fails), *(str(fin[k]) for k in finish), pct(share)])
    budgets = sorted({str(r["metrics"].get("test.max_new_tokens")) for g in gs for r in g.runs
                      if r["metrics"].get("test.max_new_tokens") is not None})
    lines = (["## Failure and finish reasons (replies, all seeds)", "",
              "Failure = the first that applies: cut_at_budget (does not parse and stopped at max_new_tokens), the "
              "parser's reason (no_brace, unclosed, unparseable, not_dict), wrong_keys, bad_label; ok = task-valid. "
              f"Generation budget (max_new_tokens): {', '.join(budgets) or 'not recorded'}.", ""] +
             md_table(["method", "set", "replies", *fails, *(f"finish {k}" for k in finish), "budget hits (%)"], rows))
    if cells:
        lines += ["", f"**Budget**: more than {100 * BUDGET_WARN:g}% of replies stopped at the budget for "
                      f"{', '.join(cells)}."]
    return lines, cells


def seeds_table(res: Results, gs: list[Group], sets: list[str]) -> list[str]:
    """Per-method mean over seeds of each seed's score, with the standard deviation and range across seeds."""
    def spread(v: list[float]) -> str:
        if not v:
            return "–"
        sd = f" ± {100 * np.std(v, ddof=1):.1f}" if len(v) > 1 else ""
        return f"{pct(float(np.mean(v)))}{sd} ({pct(min(v))}–{pct(max(v))})" if len(v) > 1 else pct(v[0])

    rows = [[g.label, str(g.seeds), *(spread(per_seed(res, g, s, m)) for s in sets
                                      for m in ("task_valid", "label_accuracy"))]
            for g in gs if not g.twin_of]
    if not any(g.seeds > 1 for g in gs):
        return []
    return (["## Across seeds (%)", "", "Mean over seeds ± standard deviation (min–max) of each seed's own score.",
             ""] +
            md_table(["method", "seeds", *(f"{s} {n}" for s in sets for n in ("task-valid", "label acc"))], rows))


def robustness(res: Results, gs: list[Group]) -> list[str]:
    """Seen vs unseen task-valid accuracy: means over phrasings, the gap, the worst phrasing and the spread."""
    sets = res.sets()
    if "seen" not in sets or "unseen" not in sets:
        return []

    def phrasings(g: Group, s: str) -> list[dict[str, float]]:
        out = []
        for r in g.runs:
            per: dict[str, list[float]] = {}
            for p in res.set_rows(r, s):
                per.setdefault(str(p.get("instruction_id")), []).append(float(bool(p["task_valid"])))
            if per:
                out.append({k: float(np.mean(v)) for k, v in per.items()})
        return out

    def avg(vals: list[float]) -> float:
        return float(np.mean(vals)) if vals else math.nan

    rows = []
    for g in gs:
        seen, unseen = phrasings(g, "seen"), phrasings(g, "unseen")
        ms, mu = avg([avg(list(d.values())) for d in seen]), avg([avg(list(d.values())) for d in unseen])
        rows.append([g.label, pct(ms), pct(mu), pct(ms - mu), pct(avg([min(d.values()) for d in unseen])),
                     pct(avg([max(d.values()) - min(d.values()) for d in unseen]))])
    return (["## Robustness on unseen phrasings (task-valid, %)", "",
             "Means over phrasings (then over seeds); gap = seen - unseen; worst/spread are over the unseen phrasings.",
             ""] + md_table(["method", "seen", "unseen", "gap", "worst unseen phrasing", "spread"], rows))


def precision_note(res: Results, gs: list[Group]) -> list[str]:
    """A warning when the runs were evaluated (or scored for drift) in different numeric precisions: greedy
    replies and NLLs then differ by numerics too, e.g. a grid resumed on a machine without native bf16, or runs
    from before the trained precision was recorded (they loaded as bf16 weights). Empty when all agree."""
    out: list[str] = []
    for key, what in (("test.precision", "evaluated"), ("drift.precision", "scored for drift")):
        by: dict[str, list[str]] = {}
        for g in gs:
            for r in g.runs:
                value = r["metrics"].get(key)
                if value:
                    by.setdefault(str(value).replace("torch.", ""), []).append(
                        f"{g.label}" + (f" seed {r['seed']}" if r.get("seed") is not None else ""))
        if len(by) > 1:
            parts = "; ".join(f"{p}: {', '.join(names)}" for p, names in sorted(by.items()))
            out.append(f"**Precision**: the runs were {what} in different numeric precisions ({parts}). A "
                       f"difference between runs in different precisions may partly be numerics; rerun the odd ones "
                       f"(move their step directories aside) to compare like with like.")
    return out + [""] if out else []


def selection_table(res: Results) -> list[str]:
    """Which step of each trained run was kept, by the validation prompts (empty when no run validated)."""
    runs = [(r, r.get("metrics") or {}) for r in res.rows]
    runs = [(r, m) for r, m in runs if m.get("train.best_step") is not None]
    if not runs:
        return []
    pct = lambda v: f"{100 * v:.1f}" if isinstance(v, (int, float)) else "–"  # noqa: E731
    rows = [[f"`{r['method']}`", str(r.get("seed", "–")), str(m["train.best_step"]), str(m.get("train.steps", "–")),
             "yes" if m.get("train.stopped_early") else "no", str(m.get("train.valid_metric", "–")),
             pct(m.get("train.valid_score")), pct(m.get("train.valid_task_valid"))] for r, m in runs]
    return (["## Model selection (validation rows x validation phrasings, never tested on)", "",
             "Each tuned run keeps the step with the best validation score (ties: task-valid, then the earlier "
             "step); it stops after `patience` validations without improvement, or at a perfect validation (no later "
             "step could be kept).", ""] +
            md_table(["method", "seed", "kept step", "steps trained", "stopped early", "validation metric",
                      "score %", "task-valid %"], rows))

"""Paired comparisons between methods and the plain-language verdict at the top of report.md.

Pairs: every trained method vs `cit` and vs any method whose name starts with `cit` (e.g. `cit_steps`), and
`delia` vs `original`; per instruction set, on the headline (task-valid) and on label accuracy. The pairing
key is (example id, instruction id) within a set; only keys every seed of both methods has count. Intervals:
`stats.cluster_bootstrap` (clusters = examples, seeds resampled per method).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from delia.experiments.results import Results
from delia.experiments.stats import NAN, Interval, cluster_bootstrap

METRIC_NAMES = {"task_valid": "task-valid", "label_accuracy": "label accuracy",
                "format_accuracy": "lenient format", "format_accuracy_strict": "exact keys"}

# said wherever a one-seed method's interval is shown (verdict, effects by ratio)
ONE_SEED = ("With one training seed on a side, an interval covers the sampling of test examples only, not the spread "
            "between training runs (which at 100 rows is several points): run >= 3 seeds before trusting a difference.")


@dataclass
class Group:
    """One method at one ratio (its largest size), all its seeds."""

    method: str
    ratio: float | None
    runs: list[dict[str, Any]]
    trained: bool
    twin_of: str | None = None  # an earlier group with the very same evaluations (w_all = delia)

    @property
    def label(self) -> str:
        return self.method if self.ratio is None else f"{self.method} (ratio {self.ratio:g})"

    @property
    def seeds(self) -> int:
        return len(self.runs)


def groups(res: Results) -> list[Group]:
    """A group per method and ratio, in report order; twins are marked, not dropped."""
    out: list[Group] = []
    seen: dict[tuple, str] = {}
    for m in res.methods:
        runs = res.pick(m)
        sizes = {r["size"] for r in runs}
        everything = [r for r in res.rows if r["method"] == m and r["size"] in sizes]
        ratios = sorted({r["ratio"] for r in everything if r["ratio"] is not None}) or [None]
        for ratio in ratios:
            rr = res.pick(m, ratio=ratio) if ratio is not None else runs
            if not rr:
                continue
            g = Group(m, ratio, rr, any("train" in r["steps"] for r in rr))
            tests = tuple(sorted(r["steps"].get("test", "") for r in rr))
            if tests in seen:
                g.twin_of = seen[tests]
            else:
                seen[tests] = g.label
            out.append(g)
    return out


def _by_example(keyed: dict[tuple[str, str], float]) -> dict[tuple[str, str], float]:
    """Re-keyed by example alone when the run has one prompt per example; {} otherwise."""
    out = {(ex, ""): v for (ex, _), v in keyed.items()}
    return out if len(out) == len(keyed) else {}


def matrix(res: Results, runs: list[dict[str, Any]], set_name: str, metric: str,
           keys: list[tuple[str, str]] | None = None,
           by_example: bool = False) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """(seeds x keys) outcomes over the keys every run has (or the given `keys`), and those keys. `by_example`:
    keyed by example id alone (each run has one prompt per example, under a phrasing of its own)."""
    per = [res.keyed(r, set_name, metric) for r in runs]
    per = [_by_example(p) if by_example else p for p in per]
    per = [p for p in per if p]
    if not per:
        return np.zeros((0, 0)), []
    if keys is None:
        common = set(per[0]).intersection(*per[1:])
        keys = sorted(common)
    return np.array([[p[k] for k in keys] for p in per]), keys


def interval(res: Results, runs: list[dict[str, Any]], set_name: str, metric: str) -> Interval:
    """One method's score with a cluster bootstrap over examples and seeds."""
    a, keys = matrix(res, runs, set_name, metric)
    return cluster_bootstrap(a, [k[0] for k in keys]) if keys else NAN


def paired(res: Results, a: Group, b: Group, set_name: str, metric: str) -> Interval:
    """Mean per-prompt difference A - B over the keys both have, with its cluster-bootstrap interval. Two methods
    scored on the same examples under different phrasings with one prompt per example each (a fixed-instruction
    ablation "seen" on its own instruction vs DELIA on its seen ones) are paired by example."""
    for by_example in (False, True):
        _, ka = matrix(res, a.runs, set_name, metric, by_example=by_example)
        _, kb = matrix(res, b.runs, set_name, metric, by_example=by_example)
        keys = sorted(set(ka) & set(kb))
        if keys:
            ma, _ = matrix(res, a.runs, set_name, metric, keys, by_example)
            mb, _ = matrix(res, b.runs, set_name, metric, keys, by_example)
            return cluster_bootstrap(ma, [k[0] for k in keys], mb)
    return NAN


@dataclass
class Comparison:
    a: Group
    b: Group
    set: str
    metric: str
    diff: Interval


# The paper's Table 4 ablations and the run each removes one component from: w/o diversified downstream data is
# DELIA with one fixed instruction; w/o all is CIT with one fixed instruction.
ABLATION_OF = {"wo_diversified": "delia", "wo_all": "cit"}


def _same_ratio(a: Group, b: Group) -> bool:
    return None in (a.ratio, b.ratio) or a.ratio == b.ratio


def pairs(gs: list[Group]) -> list[tuple[Group, Group]]:
    """(method, reference) pairs: trained methods vs each cit-like method (at the same ratio when both have one);
    delia vs original and vs plain; a recipe variant (METHOD@NAME) vs METHOD at the same ratio; an ablation vs
    the run it removes one component from (ABLATION_OF), at the same ratio."""
    live = [g for g in gs if not g.twin_of]
    refs = [g for g in live if g.method.startswith("cit")]
    out = []
    for ref in refs:
        for g in live:
            if g is ref or not g.trained or g.method in ABLATION_OF:
                continue
            if g.method.startswith("cit") and live.index(g) < live.index(ref):
                continue  # cit vs cit_steps once, not twice
            if not _same_ratio(g, ref):
                continue  # an equal-steps control is DELIA's twin at its own ratio, never at another
            out.append((g, ref))
    out += [(g, full) for g in live if g.method in ABLATION_OF for full in live
            if full.method == ABLATION_OF[g.method] and _same_ratio(g, full)]
    out += [(g, o) for g in live if g.method == "delia" for o in live if o.method == "original"]
    # `delia run`'s question: does DELIA beat what the user would do without it (plain instruction tuning)?
    out += [(g, p) for g in live if g.method == "delia" for p in live if p.method == "plain"]
    # a recipe variant against its own method at the same ratio (delia@input vs delia: what the recipe changes)
    out += [(g, b) for g in live if "@" in g.method and g.trained for b in live
            if b.method == g.method.split("@")[0] and b.ratio == g.ratio and (g, b) not in out and (b, g) not in out]
    return out


def comparisons(res: Results, sets: list[str]) -> list[Comparison]:
    """Every pair on every set, on task-valid and (when the rows have gold labels) label accuracy."""
    out = []
    for a, b in pairs(groups(res)):
        for s in sets:
            metrics = ["task_valid"] + (["label_accuracy"] if res.labelled(a.runs + b.runs, s) else [])
            for m in metrics:
                d = paired(res, a, b, s, m)
                if d.n_keys:
                    out.append(Comparison(a, b, s, m, d))
    return out


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _diff(d: Interval) -> str:
    return f"{_pts(d.mean)} points [{_pts(d.low)}, {_pts(d.high)}], " + (
        "significant" if d.significant else "not significant")


def set_phrase(s: str) -> str:
    return f"{s} phrasings" if s in ("seen", "unseen") else f"the `{s}` set"


def comparison_table(comps: list[Comparison]) -> list[str]:
    """Every paired difference, one row per pair, set and metric."""
    if not comps:
        return []
    rows = [[c.a.label, c.b.label, c.set, METRIC_NAMES[c.metric], _pts(c.diff.mean),
             f"[{_pts(c.diff.low)}, {_pts(c.diff.high)}]", "yes" if c.diff.significant else "no",
             str(c.diff.n_clusters), str(c.diff.n_keys), f"{c.a.seeds} / {c.b.seeds}"] for c in comps]
    return (["## Paired comparisons", "",
             "Difference A - B in points on the prompts both methods answered (pairing key: example id, instruction "
             "id). 95% cluster bootstrap (2000 resamples) over examples (all phrasings and seeds of an example "
             "together) and over each method's seeds; significant = the interval excludes 0.", ""] +
            md_table(["A", "B", "set", "metric", "A - B", "95% interval", "significant", "examples", "prompts",
                    "seeds A / B"], rows))


# Below the evidence grid's size (issue 15: >= 3 seeds, the 300 test items) the verdict says what a run can show.
ENOUGH_SEEDS, ENOUGH_EXAMPLES = 3, 100


def scale_note(focus: list[Comparison], evidence: str | None = None) -> list[str]:
    """What a run this small can and cannot show, from its own comparisons; [] for a run of the evidence's size.

    Args:
        focus: the verdict's comparisons; evidence: where a larger run of the same comparison is reported (the
            experiment's `evidence:`), named when given.
    """
    trained = [g for c in focus for g in (c.a, c.b) if g.trained]
    if not trained:
        return []
    seeds, examples = min(g.seeds for g in trained), min(c.diff.n_clusters for c in focus)
    if seeds >= ENOUGH_SEEDS and examples >= ENOUGH_EXAMPLES:
        return []
    # every metric compared (task-valid, label accuracy, ...): the widest interval is what limits a ranking
    widths = [(100 * (c.diff.high - c.diff.low), c.metric) for c in focus if c.a.trained and c.b.trained
              and not np.isnan(c.diff.low)]
    widest = max(widths, default=None)
    width = (f"; the interval between two tuned models spans up to {widest[0]:.0f} points here "
             f"({widest[1].replace('_', ' ')})" if widest else "")
    few = list(dict.fromkeys(g.label for g in trained if g.seeds < ENOUGH_SEEDS))
    if examples >= ENOUGH_EXAMPLES and len(few) < len({g.label for g in trained}):
        # a grid in progress: most of it is of the evidence's size, some runs are not yet
        n = {g.label: g.seeds for g in trained}
        counts = ", ".join(f"{label} ({n[label]} seed{'s' if n[label] > 1 else ''})" for label in few)
        line = (f"**What a run this size can show**: {examples} test examples; fewer than {ENOUGH_SEEDS} training "
                f"seeds for {counts}{width}. A comparison of two tuned methods that involves "
                f"{'one of these' if len(few) > 1 else 'it'} cannot rank them: a difference that is not significant "
                f"there is what so few seeds give whether or not one is better, and a significant one covers the "
                f"sampling of test examples, not the spread between training runs. The comparisons with >= "
                f"{ENOUGH_SEEDS} seeds on both sides are of the evidence's size.")
        return ["", line + (f" A larger run of this comparison: {evidence}." if evidence else "")]
    line = (f"**What a run this size can show**: {examples} test examples, {seeds} training "
            f"seed{'s' if seeds > 1 else ''} per tuned method{width}. It can show an effect larger than its "
            f"intervals, such as tuning against the untrained base model; it cannot rank two tuned methods: a "
            f"difference between them that is not significant here is what a run this size gives whether or not "
            f"one is better. Judging one needs >= {ENOUGH_SEEDS} seeds and a few hundred test examples.")
    return ["", line + (f" A larger run of this comparison: {evidence}." if evidence else "")]


def verdict(comps: list[Comparison], majority: dict[str, float], budget_cells: list[str],
            evidence: str | None = None) -> list[str]:
    """The report's opening paragraph, generated from the comparisons (never written by hand).

    Args:
        comps: the paired comparisons; majority: set -> majority-class share; budget_cells: "method / set" cells
            where more than 2% of replies stopped at the budget; evidence: the experiment's `evidence:` (a
            larger run's report), named when this run is small.
    """
    lines = ["## Verdict", ""]
    if not comps:
        return lines + ["No paired comparison is possible: the experiment has no trained method beside a `cit`-like "
                        "reference (or no halu predictions).", ""]
    focus = [c for c in comps if c.a.method == "delia"] or comps
    by_pair: dict[tuple[str, str, str], dict[str, Comparison]] = {}
    for c in focus:
        by_pair.setdefault((c.a.label, c.b.label, c.set), {})[c.metric] = c
    lines.append("Paired differences (A - B, points), 95% cluster bootstrap over examples and seeds; "
                 "significant = the interval excludes 0.")
    lines.append("")
    for (a, b, s), cs in by_pair.items():
        t = cs["task_valid"]
        line = f"- **{a} vs {b}** on {set_phrase(s)}: task-valid {_diff(t.diff)}"
        if "label_accuracy" in cs:
            line += (f"; label accuracy {_diff(cs['label_accuracy'].diff)} (always answering the majority label "
                     f"scores {100 * majority.get(s, float('nan')):.1f}%)")
        lines.append(line + f" — {t.diff.n_clusters} examples, {t.diff.n_keys} prompts, "
                            f"{t.a.seeds} vs {t.b.seeds} seeds.")
    if any(g.trained and g.seeds < 2 for c in focus for g in (c.a, c.b)):
        lines += ["", ONE_SEED]
    lines += scale_note(focus, evidence)
    sig = [c for c in comps if c.diff.significant]
    lines += ["", f"Of {len(comps)} paired comparisons (table below), {len(sig)} "
                  f"{'is' if len(sig) == 1 else 'are'} significant"
              + (": " + "; ".join(f"{c.a.label} vs {c.b.label} on {c.set} ({METRIC_NAMES[c.metric]} "
                                  f"{_pts(c.diff.mean)})" for c in sig) if sig else "") + "."]
    if budget_cells:
        lines.append(f"Replies stopped at the generation budget in more than 2% of cases for {', '.join(budget_cells)}:"
                     " there the budget, not the model, may decide the score (see Failure and finish reasons).")
    else:
        lines.append("No method hit the generation budget in more than 2% of its replies in any set.")
    return lines + [""]


def md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]

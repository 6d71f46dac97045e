"""The report's effects by diverse-data ratio: DELIA and its equal-steps control (`cit_steps`) at each ratio, plain
CIT (no diverse data, equal downstream exposure) as ratio 0, on the main table's headline metrics (task-valid, label
accuracy beside the majority class, drift NLL beside the base model), with the paired differences DELIA - cit_steps
at the same ratio and DELIA - cit; a figure of the same; and the verdict's line on which ratios and seeds exist.

Every interval is `stats.cluster_bootstrap` through `compare` (examples and seeds) or `drift_tables` (queries and
seeds); nothing here bootstraps on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from delia.experiments.compare import ONE_SEED, Group, interval, md_table, paired
from delia.experiments.config import split_method
from delia.experiments.drift_tables import drift_interval, drift_paired
from delia.experiments.results import Results
from delia.experiments.stats import Interval
from delia.experiments.tables import majority

FAMILY = ("delia", "cit_steps")  # methods run at each ratio; plain `cit` is their ratio 0
NAMES = {"task_valid": "task-valid", "label_accuracy": "label accuracy", "drift_nll": "drift NLL"}


@dataclass
class Point:
    """One method at one ratio (cit at 0) and its score per metric."""

    group: Group
    ratio: float
    scores: dict[str, Interval] = field(default_factory=dict)

    @property
    def seeds(self) -> list[int]:
        return sorted(r["seed"] for r in self.group.runs if r.get("seed") is not None)


@dataclass
class Effects:
    """Everything the section, the figure and the verdict line show, computed once."""

    set: str | None  # the main table's headline set
    metrics: list[str]  # those with a score somewhere, in NAMES order
    points: list[Point]
    diffs: list[tuple[Point, Point, str, Interval]]  # (DELIA, reference, metric, A - B)
    majority: float
    base_nll: float  # the untrained model's drift NLL (NaN without an `original` drift run)
    missing: list[str]  # what the grid lacks, in words


def _score(res: Results, g: Group, s: str | None, metric: str) -> Interval | None:
    if metric == "drift_nll":
        iv = drift_interval(res, g, "nll")
    elif s is None or (metric == "label_accuracy" and not res.labelled(g.runs, s)):
        return None
    else:
        iv = interval(res, g.runs, s, metric)
    return iv if iv.n_keys else None


def _diff(res: Results, a: Group, b: Group, s: str | None, metric: str) -> Interval | None:
    if metric == "drift_nll":
        d = drift_paired(res, a, b, "nll")
    elif s is None or (metric == "label_accuracy" and not res.labelled(a.runs + b.runs, s)):
        return None
    else:
        d = paired(res, a, b, s, metric)
    return d if d.n_keys else None


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _missing(res: Results, points: list[Point], only: dict[str, list[float]] | None = None) -> list[str]:
    """Family methods absent at a ratio, and seeds a point lacks that other trained runs have; a method the
    experiment restricts to some ratios (`only`: its `methods: {M: {ratios: [...]}}`) is expected at those only."""
    expected = sorted({s for p in points for s in p.seeds})
    ratios = sorted({p.ratio for p in points if p.ratio})
    family = [m for m in res.methods if split_method(m)[0] in FAMILY]
    out = []
    for r in ratios:
        for m in family:
            if only and m in only and r not in only[m]:
                continue
            here = next((p for p in points if p.group.method == m and p.ratio == r), None)
            if here is None:
                out.append(f"{m} at ratio {r:g}: no finished run")
            elif len(here.seeds) < len(expected):
                gone = [s for s in expected if s not in here.seeds]
                out.append(f"{m} at ratio {r:g}: seed{'s' if len(here.seeds) > 1 else ''} {_seeds(here.seeds)} "
                           f"(missing {_seeds(gone)})")
    for p in points:
        if p.ratio == 0 and len(p.seeds) < len(expected):
            out.append(f"{p.group.method}: seeds {_seeds(p.seeds)} (missing "
                       f"{_seeds([s for s in expected if s not in p.seeds])})")
    return out


def effects(res: Results, gs: list[Group], sets: list[str],
            only: dict[str, list[float]] | None = None) -> Effects | None:
    """The points and paired differences; None when no DELIA run has a ratio. `only`: the ratios a method is
    restricted to by the experiment (the verdict does not call it missing elsewhere)."""
    s = (sets[1] if len(sets) > 1 else sets[0]) if sets else None
    points = []
    for g in gs:
        base = split_method(g.method)[0]
        if g.twin_of or not g.trained:
            continue
        if base == "cit" and g.ratio is None:
            points.append(Point(g, 0.0))
        elif base in FAMILY and g.ratio is not None:
            points.append(Point(g, g.ratio))
    if not any(split_method(p.group.method)[0] == "delia" for p in points):
        return None
    for p in points:
        for m in NAMES:
            if (iv := _score(res, p.group, s, m)) is not None:
                p.scores[m] = iv
    metrics = [m for m in NAMES if any(m in p.scores for p in points)]
    diffs = []
    for a in points:
        base, recipe = split_method(a.group.method)
        if base != "delia":
            continue
        suffix = f"@{recipe}" if recipe else ""
        refs = [p for p in points if p.group.method == f"cit_steps{suffix}" and p.ratio == a.ratio]
        refs += [p for p in points if p.group.method == f"cit{suffix}"]
        for b in refs:
            for m in metrics:
                if (d := _diff(res, a.group, b.group, s, m)) is not None:
                    diffs.append((a, b, m, d))
    original = next((g for g in gs if g.method == "original"), None)
    base_nll = drift_interval(res, original, "nll").mean if original else math.nan
    every = [r for g in gs for r in g.runs]
    order = {id(g): i for i, g in enumerate(gs)}  # the report's method order (cit, delia, cit_steps)
    return Effects(s, metrics, sorted(points, key=lambda p: (p.ratio, order[id(p.group)])), diffs,
                   majority(res, every, s) if s else math.nan, base_nll, _missing(res, points, only))


def _cell(metric: str, iv: Interval | None) -> str:
    if iv is None or math.isnan(iv.mean):
        return "–"
    if metric == "drift_nll":
        return f"{iv.mean:.3f} [{iv.low:.3f}, {iv.high:.3f}]"
    return f"{100 * iv.mean:.1f} [{100 * iv.low:.1f}, {100 * iv.high:.1f}]"


def _delta(metric: str, d: Interval) -> tuple[str, str]:
    if metric == "drift_nll":
        return f"{d.mean:+.3f}", f"[{d.low:+.3f}, {d.high:+.3f}]"
    return f"{100 * d.mean:+.1f}", f"[{100 * d.low:+.1f}, {100 * d.high:+.1f}]"


def ratio_section(eff: Effects | None) -> list[str]:
    """Markdown: a row per (method, ratio), then the paired differences per ratio; [] without a DELIA ratio."""
    if eff is None or not eff.metrics:
        return []
    one = any(len(p.group.runs) == 1 for p in eff.points)
    head = {"task_valid": f"{eff.set} task-valid", "label_accuracy": f"{eff.set} label acc",
            "drift_nll": "drift NLL"}
    cols = [head[m] for m in eff.metrics]
    if "label_accuracy" in eff.metrics:
        cols.insert(eff.metrics.index("label_accuracy") + 1, "majority class")
    rows = []
    for p in eff.points:
        cells = [_cell(m, p.scores.get(m)) for m in eff.metrics]
        if "label_accuracy" in eff.metrics:
            cells.insert(eff.metrics.index("label_accuracy") + 1,
                         "–" if math.isnan(eff.majority) else f"{100 * eff.majority:.1f}")
        seeds = f"{len(p.group.runs)}{' †' if len(p.group.runs) == 1 else ''}"
        rows.append([p.group.method, f"{p.ratio:g}", seeds, *cells])
    base = "" if math.isnan(eff.base_nll) else f" (the base model: {eff.base_nll:.3f})"
    lines = ["## Effects by diverse-data ratio", "",
             "Ratio = diverse rows per downstream row. `cit` (no diverse data, the same epochs over the same rows) is "
             "ratio 0; `cit_steps` is CIT trained for exactly DELIA's optimizer steps at the same ratio and seed. "
             + (f"Scores on the `{eff.set}` set (the main table's headline); " if eff.set else "")
             + f"drift NLL: lower = closer to the base{base}. [low, high]: 95% cluster bootstrap over examples "
             "(queries for drift) and seeds.", ""]
    lines += md_table(["method", "ratio", "seeds", *cols], rows)
    if one:
        lines += ["", f"† one seed. {ONE_SEED}"]
    if eff.diffs:
        drows = [[f"{a.ratio:g}", a.group.label, b.group.label, NAMES[m], *_delta(m, d),
                  "yes" if d.significant else "no", f"{len(a.group.runs)} / {len(b.group.runs)}"]
                 for a, b, m, d in sorted(eff.diffs, key=lambda x: (x[0].ratio, x[0].group.method,
                                                                    x[1].ratio == 0))]
        lines += ["", ("Paired differences DELIA - reference per ratio (points; drift NLL in nats: negative = DELIA "
                       "stayed closer to the base); significant = the interval excludes 0."), ""]
        lines += md_table(["ratio", "A", "B", "metric", "A - B", "95% interval", "significant", "seeds A / B"], drows)
    if eff.missing:
        lines += ["", "**Not yet in the grid**: " + "; ".join(eff.missing) + "."]
    return lines


def _word(metric: str, d: Interval) -> str:
    """A paired difference DELIA - reference in words: which way, if the interval excludes 0."""
    value = " ".join(_delta(metric, d))
    if not d.significant:
        return f"no significant difference ({value})"
    if metric == "drift_nll":
        return f"**{'closer to' if d.mean < 0 else 'further from'} the base** ({value})"
    return f"**{'better' if d.mean > 0 else 'worse'}** ({value})"


_NAMES = {"task_valid": "task-valid", "label_accuracy": "label accuracy", "drift_nll": "drift NLL"}
REFERENCES = {"cit_steps": "CIT, equal optimizer steps", "cit": "CIT, equal exposure"}


def answer(eff: Effects | None, by_seed: dict[tuple[str, str, str], Interval] | None = None) -> list[str]:
    """The verdict's first lines: DELIA against each plain-tuning control at each ratio, on the headline set's
    task-valid and label accuracy and on drift from the base, in words with the interval; [] without one.

    `by_seed`: (A label, B label, metric) -> the seed-level interval (`seed_tables`, metric "SET.task_valid",
    "SET.label_accuracy" or "drift_nll"); a direction stated from the cluster bootstrap that the seed-level
    interval does not confirm is marked ‡ and explained under the table."""
    if eff is None:
        return []
    by_seed = by_seed or {}
    unconfirmed: list[str] = []
    rows = []
    for a, b, _, _ in sorted(eff.diffs, key=lambda x: (x[0].ratio, x[1].ratio == 0)):
        if a.group.method != "delia" or any(r[0] == f"{a.ratio:g}" and r[1] == b.group.method for r in rows):
            continue
        got = {m: d for x, y, m, d in eff.diffs if x is a and y is b}
        dagger = " †" if min(len(a.group.runs), len(b.group.runs)) == 1 else ""
        cells = [_word(m, got[m]) if m in got else "–" for m in eff.metrics]
        for i, m in enumerate(eff.metrics):
            seed_iv = by_seed.get((a.group.label, b.group.label, m if m == "drift_nll" else f"{eff.set}.{m}"))
            if m in got and got[m].significant and seed_iv is not None and not seed_iv.significant:
                cells[i] += " ‡"
                unconfirmed.append(f"{a.group.label} vs {b.group.label} ({_NAMES.get(m, m)}: "
                                   f"{' '.join(_delta(m, seed_iv))} over {seed_iv.n_keys} seeds)")
        if "label_accuracy" in got and all(p.scores.get("label_accuracy") is not None
                                           and p.scores["label_accuracy"].mean < eff.majority for p in (a, b)):
            cells[eff.metrics.index("label_accuracy")] += "; both below the majority class"
        rows.append([f"{a.ratio:g}", b.group.method, REFERENCES.get(b.group.method, ""),
                     f"{len(a.group.runs)} / {len(b.group.runs)}{dagger}", *cells])
    if not rows:
        return []
    # an equal-steps control the grid runs but has not finished at a DELIA ratio: said, not left out
    if any(p.group.method == "cit_steps" for p in eff.points):
        for a in eff.points:
            if a.group.method == "delia" and not any(p.group.method == "cit_steps" and p.ratio == a.ratio
                                                     for p in eff.points):
                rows.append([f"{a.ratio:g}", "cit_steps", REFERENCES["cit_steps"], f"{len(a.group.runs)} / 0",
                             *("not run yet" for _ in eff.metrics)])
        rows.sort(key=lambda r: (float(r[0]), r[1] != "cit_steps"))
    head = {"task_valid": f"task-valid ({eff.set})", "drift_nll": "drift from the base (NLL)",
            "label_accuracy": f"label accuracy ({eff.set}; always the majority label: "
                              + ("–" if math.isnan(eff.majority) else f"{100 * eff.majority:.1f}") + ")"}
    lines = ["**Does DELIA beat plain instruction tuning?** DELIA - control, paired, 95% cluster bootstrap over "
             "examples (queries for drift) and seeds; a direction is stated only where the interval excludes 0.", ""]
    lines += md_table(["DELIA at ratio", "control", "what is equal", "seeds DELIA / control",
                       *(head[m] for m in eff.metrics)], rows)
    if any("†" in r[3] for r in rows):
        lines += ["", f"† one seed on a side. {ONE_SEED}"]
    if unconfirmed:
        lines += ["", "‡ not confirmed seed by seed: the 95% Student-t interval over the training seeds (each seed "
                      "one observation; see Between training runs) includes 0 for " + "; ".join(unconfirmed) +
                      ". The direction holds for these test examples, not yet across training runs."]
    return lines + [""]


def coverage(eff: Effects | None) -> list[str]:
    """The verdict's line on the grid behind it: seeds per method and ratio, and what is missing (only when there
    is more than one ratio or something is missing)."""
    if eff is None:
        return []
    ratios = sorted({p.ratio for p in eff.points if p.ratio})
    if len(ratios) < 2 and not eff.missing:
        return []
    parts = [f"{p.group.method} at ratio {p.ratio:g}: seed{'s' if len(p.seeds) > 1 else ''} {_seeds(p.seeds)}"
             for p in eff.points]
    line = f"Ratios {', '.join(f'{r:g}' for r in ratios)} (cit = ratio 0). Seeds: {'; '.join(parts)}."
    if eff.missing:
        line += (" Missing: " + "; ".join(eff.missing) + " — a difference that needs a missing run is not stated, "
                 "and the others rest on the seeds named.")
    return [line, ""]


def ratio_figure(eff: Effects | None, figs: Path) -> tuple[str | None, str]:
    """figures/ratio_effects.png: a panel per metric vs ratio, a line per method, cit at ratio 0, the majority
    class and the base model as horizontal lines; hollow markers = one seed. None when there is nothing to draw."""
    if eff is None or not eff.metrics or not any(p.ratio for p in eff.points):
        return None, ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(eff.metrics), figsize=(4.6 * len(eff.metrics), 3.8), squeeze=False)
    methods = list(dict.fromkeys(p.group.method for p in eff.points))
    ratios = sorted({p.ratio for p in eff.points})
    for ax, m in zip(axes[0], eff.metrics):
        scale = 1.0 if m == "drift_nll" else 100.0
        for j, name in enumerate(methods):
            pts = [p for p in eff.points if p.group.method == name and m in p.scores]
            if not pts:
                continue
            off = 0.025 * (j - (len(methods) - 1) / 2)  # a small shift so error bars do not overlap
            xs = [p.ratio * (1 + off) + off for p in pts]
            ys = np.array([p.scores[m].mean for p in pts]) * scale
            err = np.nan_to_num(np.array([[p.scores[m].mean - p.scores[m].low, p.scores[m].high - p.scores[m].mean]
                                          for p in pts]).T) * scale
            line = ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=name)
            start = next((p for p in eff.points if p.ratio == 0 and m in p.scores), None)
            if start is not None and pts[0].ratio > 0:  # at ratio 0 both DELIA and its equal-steps twin are CIT
                ax.plot([0, xs[0]], [start.scores[m].mean * scale, ys[0]], ":", color=line[0].get_color())
            one = [k for k, p in enumerate(pts) if len(p.group.runs) == 1]
            if one:
                ax.plot([xs[k] for k in one], ys[one], "o", mfc="white", color=line[0].get_color(), zorder=5)
        if m == "label_accuracy" and not math.isnan(eff.majority):
            ax.axhline(100 * eff.majority, color="gray", ls="--", lw=1, label="majority class")
        if m == "drift_nll" and not math.isnan(eff.base_nll):
            ax.axhline(eff.base_nll, color="gray", ls="--", lw=1, label="base model")
        unit = "" if m == "drift_nll" else " (%)"
        ax.set(xlabel="diverse rows per downstream row (ratio; cit = 0)", ylabel=NAMES[m] + unit,
               title=NAMES[m] + (f" ({eff.set})" if m != "drift_nll" and eff.set else ""))
        ax.set_xticks(ratios, [f"{r:g}" for r in ratios])
        if max(ratios) > 20 * (ratios[1] if len(ratios) > 1 and ratios[1] > 0 else 1):
            ax.set_xscale("symlog")
        ax.legend(fontsize=7)
    fig.suptitle("Effects by diverse-data ratio (95% cluster bootstrap; hollow = one seed)", fontsize=9)
    fig.tight_layout()
    fig.savefig(figs / "ratio_effects.png", dpi=120)
    plt.close(fig)
    return "ratio_effects.png", "Effects by diverse-data ratio"

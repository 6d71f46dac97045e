"""`delia report DIR`: the paper's tables and figures, rebuilt from an experiment's saved results only
(results.json, each evaluation's predictions.jsonl); nothing is recomputed with a model.

Cells pool every seed of a method at one grid point; intervals are seeded percentile bootstraps over the
pooled per-prompt outcomes (so one seed gives the evaluation's own interval, several seeds a tighter one).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from delia.experiments.results import predictions

PAPER_ORDER = ["original", "random_init", "mean_init", "icl", "ctg", "dipmt", "fact_based", "dmt", "neftune",
               "cit", "delia", "w_all", "wo_diverse", "wo_diversified", "wo_all"]
ABLATIONS = [("w_all", "w/ all (DELIA)"), ("wo_diverse", "w/o extensive diverse data"),
             ("wo_diversified", "w/o diversified downstream data"), ("wo_all", "w/o all")]


def ci(values: list[float], n: int = 1000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) by a seeded percentile bootstrap; NaNs when there are no values."""
    if not values:
        return math.nan, math.nan, math.nan
    v = np.asarray(values, dtype=np.float64)
    idx = np.random.default_rng(seed).integers(0, len(v), size=(n, len(v)))
    means = v[idx].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(r) + " |" for r in rows)]


class Results:
    """results.json plus helpers to pick and pool runs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        path = root / "results.json"
        if not path.exists():
            raise FileNotFoundError(f"{path}: no results; run `delia experiment CONFIG.yaml` first")
        self.rows: list[dict[str, Any]] = json.loads(path.read_text())
        self.methods = sorted({r["method"] for r in self.rows},
                              key=lambda m: PAPER_ORDER.index(m) if m in PAPER_ORDER else 99)
        self.sizes = sorted({r["size"] for r in self.rows if r["size"] is not None})
        self.ratios = sorted({r["ratio"] for r in self.rows if r["ratio"] is not None})

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

    def pooled(self, runs: list[dict[str, Any]], set_name: str, key: str = "parsed") -> tuple[float, float, float]:
        vals = [v for r in runs if "test" in r["steps"]
                for v in predictions(self.root / r["steps"]["test"], set_name, key)]
        return ci(vals)

    def mean(self, runs: list[dict[str, Any]], metric: str) -> float | None:
        vals = [r["metrics"][metric] for r in runs if r["metrics"].get(metric) is not None]
        return float(np.mean(vals)) if vals else None

    def sets(self) -> list[str]:
        names = {k.split(".")[0] for r in self.rows for k in r["metrics"]
                 if k.endswith(".format_accuracy") and not k.startswith(("gap.", "valid."))}
        return sorted(names, key=lambda s: (s != "seen", s != "unseen", s))

    def cell(self, runs: list[dict[str, Any]], set_name: str, key: str = "parsed") -> str:
        m, lo, hi = self.pooled(runs, set_name, key)
        return "–" if math.isnan(m) else f"{_pct(m)} [{_pct(lo)}, {_pct(hi)}]"


def build_report(root: str | Path) -> Path:
    """Write DIR/report.md and DIR/figures/*.png from DIR/results.json; returns the report path."""
    root = Path(root)
    res = Results(root)
    figs = root / "figures"
    figs.mkdir(exist_ok=True)
    exp = (root / "experiment.yaml").read_text() if (root / "experiment.yaml").exists() else ""
    lines = [f"# Experiment report: `{root}`", "",
             f"{len(res.rows)} runs; methods {', '.join(res.methods)}; sizes {res.sizes or '–'}; "
             f"ratios {res.ratios or '–'}. Cells pool all seeds at each method's largest size and ratio (the `ratio` "
             f"column) unless a column says otherwise; [low, high] is a 95% bootstrap interval over prompts. Rebuilt from saved results only.", ""]
    sets = res.sets()
    lines += main_table(res, sets) + [""]
    lines += table1(res) + [""]
    lines += table2(res, sets) + [""]
    lines += table3(res) + [""]
    lines += table4(res, sets) + [""]
    lines += robustness(res) + [""]
    lines += ratio_table(res) + [""]
    lines += ["## Figures", ""]
    for name, title in (figure2(res, figs), figure3(res, figs), figure4(res, figs), accuracy_figure(res, figs, sets)):
        if name:
            lines.append(f"![{title}](figures/{name})")
    lines += ["", "## Experiment config", "", "```yaml", exp.rstrip(), "```", ""]
    out = root / "report.md"
    out.write_text("\n".join(lines))
    return out


def main_table(res: Results, sets: list[str]) -> list[str]:
    """Base vs tuned methods: format accuracy per instruction set, strict and label accuracy, improvement."""
    if not sets:
        return []
    last = sets[1] if len(sets) > 1 else sets[0]
    base = res.pooled(res.pick("original"), last)[0] if "original" in res.methods else math.nan
    rows = []
    for m in res.methods:
        runs = res.pick(m)
        if not runs:
            continue
        acc = res.pooled(runs, last)[0]
        imp = f"{100 * (acc / base - 1):+.1f}%" if base and not math.isnan(base) and base > 0 else "–"
        ratio = {r["ratio"] for r in runs} - {None}
        rows.append([m, f"{ratio.pop():g}" if ratio else "–", str(len(runs)), *(res.cell(runs, s) for s in sets),
                     res.cell(runs, last, "strict"), _pct(res.mean(runs, f"{last}.label_accuracy")), imp])
    return (["## Main results: format accuracy (%) by instruction set", ""] +
            _table(["method", "ratio", "seeds", *(f"{s} format acc" for s in sets), f"{last} strict",
                    f"{last} label acc", f"vs original ({last})"], rows))


def table1(res: Results) -> list[str]:
    """Table 1: L2 between the special token's hidden state and 'json'/'thought' at first/middle/last block."""
    rows = []
    for m in res.methods:
        runs = res.pick(m)
        if res.mean(runs, "l2.json.middle") is None:
            continue
        rows.append([m, *(_num(res.mean(runs, f"l2.{w}.{k}"), 1) for w in ("json", "thought")
                          for k in ("first", "middle", "last")), _num(res.mean(runs, "l2.mean.middle"), 1)])
    if not rows:
        return []
    return (["## Table 1: concept L2 of the special token (lower = closer)", ""] +
            _table(["method", "json first", "json middle", "json last", "thought first", "thought middle",
                    "thought last", "middle avg"], rows))


def table2(res: Results, sets: list[str]) -> list[str]:
    """Table 2: formatted-generation accuracy by downstream data size."""
    if not res.sizes or not sets:
        return []
    s = sets[1] if len(sets) > 1 else sets[0]
    rows = [[m, *(res.cell(res.pick(m, size=n), s) for n in res.sizes)] for m in res.methods
            if any(res.pick(m, size=n) for n in res.sizes)]
    return ([f"## Table 2: format accuracy (%) on the `{s}` phrasings by data size", ""] +
            _table(["method", *(f"{n} rows" for n in res.sizes)], rows))


def table3(res: Results) -> list[str]:
    """Table 3: translation scores per direction (only when the experiment evaluated translation)."""
    keys = sorted({k for r in res.rows for k in r["metrics"] if k.endswith((".chrf++", ".bleu", ".bleurt"))
                   and not k.startswith("valid")})
    if not keys:
        return []
    rows = [[m, *(_num(res.mean(res.pick(m), k), 2) for k in keys)] for m in res.methods if res.pick(m)]
    return ["## Table 3: translation", ""] + _table(["method", *keys], rows)


def table4(res: Results, sets: list[str]) -> list[str]:
    """Table 4: DELIA's ablations."""
    twins = {"w_all": "delia", "wo_diverse": "cit"}  # the same steps under the paper's names
    present = [(m if m in res.methods else twins.get(m), label) for m, label in ABLATIONS]
    present = [(m, label) for m, label in present if m in res.methods]
    if not any(m in ("wo_diversified", "wo_all") for m, _ in present) or not sets:
        return []
    present += [(m, f"({m}, untrained)") for m in ("original", "random_init") if m in res.methods]
    s = sets[1] if len(sets) > 1 else sets[0]
    rows = [[label, res.cell(res.pick(m), s), res.cell(res.pick(m), sets[0]),
             _pct(res.mean(res.pick(m), f"{s}.label_accuracy")), _num(res.mean(res.pick(m), "l2.mean.middle"), 1),
             _num(res.mean(res.pick(m), "valid.loss"), 3)] for m, label in present]
    return (["## Table 4: ablations", ""] +
            _table(["condition", f"{s} format acc", f"{sets[0]} format acc", "label acc", "mid-layer L2",
                    "valid loss"], rows))


def robustness(res: Results) -> list[str]:
    """Seen vs unseen phrasings: means, gap, worst phrasing and spread."""
    if "seen" not in res.sets() or "unseen" not in res.sets():
        return []
    rows = []
    for m in res.methods:
        runs = res.pick(m)
        rows.append([m, _pct(res.mean(runs, "seen.format_accuracy")), _pct(res.mean(runs, "unseen.format_accuracy")),
                     _pct(res.mean(runs, "gap.format_accuracy")),
                     _pct(res.mean(runs, "unseen.format_accuracy.phrasing_min")),
                     _pct(res.mean(runs, "unseen.format_accuracy.phrasing_spread"))])
    return (["## Robustness on unseen phrasings (format accuracy, %)", "",
             "gap = seen - unseen; worst/spread are over the unseen phrasings (per-phrasing means).", ""] +
            _table(["method", "seen", "unseen", "gap", "worst unseen phrasing", "spread"], rows))


def _by_ratio(res: Results, metric: str) -> dict[float, list[float]]:
    """DELIA's metric per ratio at the largest size (ratio 0 = CIT)."""
    out: dict[float, list[float]] = defaultdict(list)
    for r in res.pick("cit"):
        if r["metrics"].get(metric) is not None:
            out[0.0].append(r["metrics"][metric])
    for ratio in res.ratios:
        for r in res.pick("delia", ratio=ratio):
            if r["metrics"].get(metric) is not None:
                out[ratio].append(r["metrics"][metric])
    return dict(sorted(out.items()))


def ratio_table(res: Results) -> list[str]:
    loss, space = _by_ratio(res, "valid.loss"), _by_ratio(res, "valid.state_space")
    if len(loss) < 2:
        return []
    s0 = float(np.exp(np.mean(np.log(space[0.0])))) if space.get(0.0) else None
    rows = []
    for ratio in loss:
        s = float(np.exp(np.mean(np.log(space[ratio])))) if space.get(ratio) else None
        red = 1 - s / s0 if s and s0 else None
        rows.append([f"{ratio:g}", str(len(loss[ratio])), _num(float(np.mean(loss[ratio])), 3), _num(s, 2),
                     _pct(red)])
    return (["## Downstream loss and first-token state space vs diverse-data ratio (Figures 3-4)", "",
             "ratio 0 = CIT. State space = geometric mean of exp(entropy) at the first response token; "
             "reduction = 1 - S_r / S_0.", ""] +
            _table(["ratio", "seeds", "valid loss", "state space", "reduction (%)"], rows))


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure2(res: Results, figs: Path) -> tuple[str | None, str]:
    """L2 of the special token to each concept word across layers, one line per method."""
    curves = {m: [r["metrics"]["l2_layers"] for r in res.pick(m) if r["metrics"].get("l2_layers")]
              for m in res.methods}
    curves = {m: c for m, c in curves.items() if c}
    if not curves:
        return None, ""
    plt = _plt()
    words = list(next(iter(curves.values()))[0])
    fig, axes = plt.subplots(1, len(words), figsize=(5 * len(words), 3.6), squeeze=False)
    for ax, w in zip(axes[0], words):
        for m, layers in curves.items():
            ax.plot(np.mean([c[w] for c in layers], axis=0), label=m)
        ax.set(title=f"<sep> vs '{w}'", xlabel="hidden state (0 = embeddings)", ylabel="L2")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figs / "fig2_l2_layers.png", dpi=120)
    plt.close(fig)
    return "fig2_l2_layers.png", "Figure 2: L2 across layers"


def _ratio_plot(res: Results, figs: Path, metric: str, name: str, ylabel: str, title: str,
                transform=None) -> tuple[str | None, str]:
    data = _by_ratio(res, metric)
    if len(data) < 2:
        return None, ""
    if transform:
        data = transform(data)
        if not data:
            return None, ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 3.6))
    xs = list(data)
    ax.errorbar(xs, [np.mean(v) for v in data.values()], yerr=[np.std(v) if len(v) > 1 else 0 for v in data.values()],
                marker="o", capsize=3)
    ax.set(xlabel="diverse rows per downstream row (ratio)", ylabel=ylabel, title=title)
    if max(xs) > 20 * (sorted(xs)[1] if len(xs) > 1 and sorted(xs)[1] > 0 else 1):
        ax.set_xscale("symlog")
    fig.tight_layout()
    fig.savefig(figs / name, dpi=120)
    plt.close(fig)
    return name, title


def figure3(res: Results, figs: Path) -> tuple[str | None, str]:
    return _ratio_plot(res, figs, "valid.loss", "fig3_loss_vs_ratio.png", "downstream loss (valid)",
                       "Figure 3: downstream loss vs diverse-data scale")


def figure4(res: Results, figs: Path) -> tuple[str | None, str]:
    def reduction(data: dict[float, list[float]]) -> dict[float, list[float]]:
        if 0.0 not in data:
            return {}
        s0 = float(np.exp(np.mean(np.log(data[0.0]))))
        return {r: [1 - v / s0 for v in vals] for r, vals in data.items()}

    return _ratio_plot(res, figs, "valid.state_space", "fig4_state_space.png", "state-space reduction",
                       "Figure 4: first-token state-space reduction", reduction)


def accuracy_figure(res: Results, figs: Path, sets: list[str]) -> tuple[str | None, str]:
    """Format accuracy per method and instruction set, with intervals (the main table as a plot)."""
    if not sets:
        return None, ""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(res.methods) + 2), 3.8))
    width = 0.8 / len(sets)
    for j, s in enumerate(sets):
        stats = [res.pooled(res.pick(m), s) for m in res.methods]
        xs = np.arange(len(res.methods)) + j * width
        means = np.array([x[0] for x in stats])
        err = np.array([[x[0] - x[1], x[2] - x[0]] for x in stats]).T
        ax.bar(xs, 100 * means, width, yerr=100 * err, capsize=3, label=s)
    ax.set_xticks(np.arange(len(res.methods)) + width * (len(sets) - 1) / 2, res.methods, rotation=30, ha="right")
    ax.set(ylabel="format accuracy (%)", title="Format accuracy by instruction set")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(figs / "format_accuracy.png", dpi=120)
    plt.close(fig)
    return "format_accuracy.png", "Format accuracy by method and instruction set"

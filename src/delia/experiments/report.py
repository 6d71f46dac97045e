"""`delia report DIR`: the verdict, the paper's tables and figures, paired comparisons with significance,
rebuilt from an experiment's saved results only (results.json, each evaluation's predictions.jsonl); nothing is
recomputed with a model, so the report is a pure function of what the grid saved.

Scores come from the saved predictions (`delia.evaluation.outcomes`), so an experiment finished before a metric
existed is reported with it. Intervals are cluster bootstraps over examples and seeds (`stats`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np

from delia.experiments import answer, compare, drift_tables, phrasings, ratio_tables, seed_tables, tables
from delia.experiments.compare import Group, groups, interval, md_table
from delia.experiments.results import PAPER_ORDER, Results  # noqa: F401  (re-exported for callers)
from delia.experiments.tables import cell, pct

ABLATIONS = [("w_all", "w/ all (DELIA)"), ("wo_diverse", "w/o extensive diverse data"),
             ("wo_diversified", "w/o diversified downstream data"), ("wo_all", "w/o all")]



def _num(x: float | None, nd: int = 2) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def build_report(root: str | Path) -> Path:
    """Write DIR/report.md and DIR/figures/*.png from DIR/results.json and the saved predictions; returns the
    report path."""
    root = Path(root)
    res = Results(root)
    figs = root / "figures"
    figs.mkdir(exist_ok=True)
    exp = (root / "experiment.yaml").read_text() if (root / "experiment.yaml").exists() else ""
    sets = res.sets()
    gs = groups(res)
    comps = compare.comparisons(res, sets)
    fail_lines, budget_cells = tables.failure_table(res, gs, sets)
    every = [r for g in gs for r in g.runs]
    majority = {s: tables.majority(res, every, s) for s in sets}
    effects = ratio_tables.effects(res, gs, sets, _ratio_restrictions(exp))
    lines = [f"# Experiment report: `{root}`", "",
             f"{len(res.rows)} runs; methods {', '.join(res.methods)}; sizes {res.sizes or '–'}; "
             f"ratios {res.ratios or '–'}. Rebuilt from saved results only.", ""]
    lines += answer.answer_first(res, gs, sets)
    verdict = compare.verdict(comps, majority, budget_cells, _evidence(exp)) if sets else []
    by_seed = seed_tables.report_comparisons(res, gs, sets)
    seed_ivs = {(c.a, c.b, c.metric): c.diff for c in by_seed}
    lines += verdict[:2] + ratio_tables.answer(effects, seed_ivs) + verdict[2:]
    drift_lines = drift_tables.drift_verdict(res, gs)
    lines += (drift_lines + [""]) if drift_lines else []
    lines += (seed_tables.seed_verdict(by_seed)[1:] + [""]) if by_seed else []
    lines += ratio_tables.coverage(effects)
    lines += tables.precision_note(res, gs)
    for part in (tables.main_table(res, gs, sets), tables.label_table(res, gs, sets), tables.selection_table(res),
                 fail_lines,
                 compare.comparison_table(comps), drift_tables.drift_section(res, gs),
                 seed_tables.seed_section(by_seed),
                 ratio_tables.ratio_section(effects),
                 tables.seeds_table(res, gs, sets), table1(res), table2(res, sets),
                 table3(res), table4(res, sets), tables.robustness(res, gs), phrasings.phrasing_section(res, gs, sets),
                 ratio_table(res)):
        lines += part + ([""] if part else [])
    lines += ["## Figures", ""]
    for name, title in (accuracy_figure(res, gs, figs, sets, "task_valid"), difference_figure(comps, figs),
                        ratio_tables.ratio_figure(effects, figs),
                        accuracy_figure(res, gs, figs, sets, "format_accuracy"), figure2(res, figs),
                        figure3(res, figs), figure4(res, figs),
                        phrasings.phrasing_figure(res, gs, sets, figs)):
        if name:
            lines.append(f"![{title}](figures/{name})")
    n_items, n_drift = write_items(res, root / "items.csv", root / "drift_items.csv")
    lines += ["", f"Per-prompt outcomes behind every table: `items.csv` ({n_items} rows: run, set, example, "
              f"instruction, each 0/1 outcome, failure and finish reason) and `drift_items.csv` ({n_drift} rows: "
              "run, query, NLL, leak), so every interval here can be recomputed without the step cache."]
    lines += ["", "## Experiment config", "", "```yaml", exp.rstrip(), "```", ""]
    out = root / "report.md"
    out.write_text("\n".join(lines))
    return out


ITEM_COLUMNS = ["run", "method", "ratio", "seed", "set", "example_id", "instruction_id", "task_valid",
                "format_accuracy", "format_accuracy_strict", "label_accuracy", "label", "gold_label", "failure",
                "finish_reason"]


def write_items(res: Results, items: Path, drift: Path) -> tuple[int, int]:
    """Every run's per-prompt test outcomes (the 0/1 values `Results.keyed` pairs on; blank where the task has no
    such metric) and per-query drift values, as CSV; returns the row counts. Rows follow results.json's run order,
    then the predictions' order, so the files are a pure function of what the grid saved."""
    import csv

    from delia.experiments.results import ROW_METRICS

    n_items = n_drift = 0
    with open(items, "w", newline="", encoding="utf-8") as f, open(drift, "w", newline="", encoding="utf-8") as g:
        wi, wd = csv.writer(f), csv.writer(g)
        wi.writerow(ITEM_COLUMNS)
        wd.writerow(["run", "method", "ratio", "seed", "query_id", "nll", "leak"])
        for run in res.rows:
            head = [run["run"], run["method"], run.get("ratio"), run.get("seed")]
            for i, p in enumerate(res.predictions(run)):
                outcome = []
                for name, fn in ROW_METRICS.items():
                    try:
                        outcome.append(int(bool(fn(p))))
                    except KeyError:  # a task without this metric
                        outcome.append("")
                wi.writerow([*head, p.get("set"), p.get("example_id", i), p.get("instruction_id", ""), *outcome,
                             p.get("label"), p.get("gold_label"), p.get("failure"), p.get("finish_reason")])
                n_items += 1
            for qid, v in drift_tables.drift_rows(res, run).items():
                wd.writerow([*head, qid, v["nll"], int(v["leak"])])
                n_drift += 1
    return n_items, n_drift


def _evidence(exp_yaml: str) -> str | None:
    """The saved experiment config's `evidence:` (where a larger run of the same comparison is reported)."""
    import yaml

    try:
        got = yaml.safe_load(exp_yaml) if exp_yaml else None
    except yaml.YAMLError:
        return None
    return got.get("evidence") if isinstance(got, dict) else None


def _ratio_restrictions(exp_yaml: str) -> dict[str, list[float]]:
    """The saved experiment config's per-method ratio restrictions (`methods: {delia@input: {ratios: [3]}}`)."""
    import yaml

    try:
        got = yaml.safe_load(exp_yaml) if exp_yaml else None
    except yaml.YAMLError:
        return {}
    methods = got.get("methods") if isinstance(got, dict) else None
    out = {}
    for name, opts in (methods or {}).items() if isinstance(methods, dict) else []:
        ratios = opts.get("ratios") if isinstance(opts, dict) else None
        if isinstance(ratios, list) and all(isinstance(r, (int, float)) for r in ratios):
            out[str(name)] = [float(r) for r in ratios]
    return out


def main_table(res: Results, sets: list[str]) -> list[str]:
    """The headline table (also printed by `delia experiment`)."""
    return tables.main_table(res, groups(res), sets)


def _rows_by_ratio(res: Results) -> list[tuple[str, str, float | None]]:
    """(row label, method, ratio) per method: one row per ratio when a method ran at several (labelled with the
    ratio), else the method at its largest ratio under its own name."""
    out = []
    for m in res.methods:
        ratios = sorted({r["ratio"] for r in res.rows if r["method"] == m and r["ratio"] is not None})
        if len(ratios) > 1:
            out += [(f"{m} (ratio {x:g})", m, x) for x in ratios]
        else:
            out.append((m, m, None))
    return out


def table1(res: Results) -> list[str]:
    """Table 1: L2 between the special token's hidden state and 'json'/'thought' at first/middle/last block."""
    rows = []
    for label, m, ratio in _rows_by_ratio(res):
        runs = res.pick(m, ratio=ratio)
        if res.mean(runs, "l2.json.middle") is None:
            continue
        rows.append([label, *(_num(res.mean(runs, f"l2.{w}.{k}"), 1) for w in ("json", "thought")
                          for k in ("first", "middle", "last")), _num(res.mean(runs, "l2.mean.middle"), 1)])
    if not rows:
        return []
    return (["## Table 1: concept L2 of the special token (lower = closer)", ""] +
            md_table(["method", "json first", "json middle", "json last", "thought first", "thought middle",
                    "thought last", "middle avg"], rows))


def table2(res: Results, sets: list[str]) -> list[str]:
    """Table 2: task-valid accuracy by downstream data size."""
    if not res.sizes or not sets:
        return []
    s = sets[1] if len(sets) > 1 else sets[0]
    rows = [[label, *(cell(interval(res, res.pick(m, size=n, ratio=x), s, "task_valid")) for n in res.sizes)]
            for label, m, x in _rows_by_ratio(res) if any(res.pick(m, size=n, ratio=x) for n in res.sizes)]
    return ([f"## Table 2: task-valid accuracy (%) on the `{s}` phrasings by data size", ""] +
            md_table(["method", *(f"{n} rows" for n in res.sizes)], rows))


def table3(res: Results) -> list[str]:
    """Table 3: translation scores per direction (only when the experiment evaluated translation)."""
    keys = sorted({k for r in res.rows for k in r["metrics"] if k.endswith((".chrf++", ".bleu", ".bleurt"))
                   and not k.startswith("valid")})
    if not keys:
        return []
    rows = [[m, *(_num(res.mean(res.pick(m), k), 2) for k in keys)] for m in res.methods if res.pick(m)]
    return ["## Table 3: translation", ""] + md_table(["method", *keys], rows)


def table4(res: Results, sets: list[str]) -> list[str]:
    """Table 4: DELIA's ablations (task-valid; label accuracy beside the majority class). DELIA and w/o diversified
    downstream data are shown at the same ratio (the ablation's), so each row removes one component."""
    twins = {"w_all": "delia", "wo_diverse": "cit"}  # the same steps under the paper's names
    present = [(m if m in res.methods else twins.get(m), label) for m, label in ABLATIONS]
    present = [(m, label) for m, label in present if m in res.methods]
    if not any(m in ("wo_diversified", "wo_all") for m, _ in present) or not sets:
        return []
    ablated = {r["ratio"] for r in res.pick("wo_diversified")} - {None}
    ratio = max(ablated) if ablated else None  # DELIA at the ablation's ratio (None: DELIA's largest)
    present += [(m, f"({m}, untrained)") for m in ("original", "random_init") if m in res.methods]
    runs = {m: res.pick(m, ratio=ratio if m in ("delia", "w_all", "wo_diversified") else None) for m, _ in present}
    s = sets[1] if len(sets) > 1 else sets[0]
    shown = [s] + [x for x in sets[:1] if x != s]
    maj = pct(tables.majority(res, [r for m, _ in present for r in runs[m]], s))
    rows = [[label, str(len(runs[m])), *(cell(interval(res, runs[m], x, "task_valid")) for x in shown),
             pct(interval(res, runs[m], s, "label_accuracy").mean), maj,
             _num(res.mean(runs[m], "l2.mean.middle"), 1), _num(res.mean(runs[m], "valid.loss"), 3)]
            for m, label in present]
    at = f"DELIA and w/o diversified downstream data at ratio {ratio:g}. " if ratio is not None else ""
    return (["## Table 4: ablations", "", f"{at}Each row's seeds pooled; [low, high]: 95% cluster bootstrap.", ""] +
            md_table(["condition", "seeds", *(f"{x} task-valid" for x in shown), f"{s} label acc",
                      "majority class", "mid-layer L2", "valid loss"], rows))


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
                     pct(red)])
    return (["## Downstream loss and first-token state space vs diverse-data ratio (Figures 3-4)", "",
             "ratio 0 = CIT. State space = geometric mean of exp(entropy) at the first response token; "
             "reduction = 1 - S_r / S_0.", ""] +
            md_table(["ratio", "seeds", "valid loss", "state space", "reduction (%)"], rows))


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


def accuracy_figure(res: Results, gs: list[Group], figs: Path, sets: list[str],
                    metric: str) -> tuple[str | None, str]:
    """A metric per method and instruction set with cluster-bootstrap intervals (the main table as a plot)."""
    live = [g for g in gs if not g.twin_of]
    if not sets or not live:
        return None, ""
    name = compare.METRIC_NAMES[metric]
    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5, 1.1 * len(live) + 2), 3.8))
    width = 0.8 / len(sets)
    for j, s in enumerate(sets):
        stats = [interval(res, g.runs, s, metric) for g in live]
        xs = np.arange(len(live)) + j * width
        means = np.array([x.mean for x in stats])
        err = np.nan_to_num(np.array([[x.mean - x.low, x.high - x.mean] for x in stats]).T)
        ax.bar(xs, 100 * np.nan_to_num(means), width, yerr=100 * err, capsize=3, label=s)
    ax.set_xticks(np.arange(len(live)) + width * (len(sets) - 1) / 2, [g.label for g in live], rotation=30,
                  ha="right")
    ax.set(ylabel=f"{name} (%)", ylim=(0, 105), title=f"{name.capitalize()} by instruction set (95% cluster bootstrap)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    file = f"{metric}.png"
    fig.savefig(figs / file, dpi=120)
    plt.close(fig)
    return file, f"{name.capitalize()} by method and instruction set"


def difference_figure(comps: list[compare.Comparison], figs: Path) -> tuple[str | None, str]:
    """Paired differences (A - B) with their intervals: one line per pair and set, per metric."""
    if not comps:
        return None, ""
    plt = _plt()
    metrics = list(dict.fromkeys(c.metric for c in comps))
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 0.32 * len(comps) / len(metrics) + 1.6),
                             squeeze=False)
    for ax, m in zip(axes[0], metrics):
        cs = [c for c in comps if c.metric == m]
        ys = np.arange(len(cs))
        for y, c in zip(ys, cs):
            colour = "tab:red" if c.diff.significant else "tab:gray"
            err = [[100 * (c.diff.mean - c.diff.low)], [100 * (c.diff.high - c.diff.mean)]]
            ax.errorbar(100 * c.diff.mean, y, xerr=err, fmt="o", color=colour, capsize=3)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(ys, [f"{c.a.label} - {c.b.label} ({c.set})" for c in cs], fontsize=7)
        ax.invert_yaxis()
        ax.set(xlabel=f"{compare.METRIC_NAMES[m]}: difference (points)", title="red = significant")
    fig.tight_layout()
    fig.savefig(figs / "paired_differences.png", dpi=120)
    plt.close(fig)
    return "paired_differences.png", "Paired differences with 95% cluster-bootstrap intervals"

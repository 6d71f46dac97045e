"""Per-phrasing robustness in the report: each method's accuracy under every phrasing of an instruction set,
and min / mean / max / std over the phrasings, from the saved predictions only (plus a plot).

The headline asks "how often is the reply usable"; this section asks "how much does that depend on how the
instruction was worded". A method whose mean is high but whose worst phrasing is low is not robust.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from delia.experiments.compare import METRIC_NAMES, Group, md_table
from delia.experiments.results import ROW_METRICS, Results
from delia.experiments.tables import pct

MIN_PHRASINGS = 2  # a set with one phrasing has no spread to show


def per_phrasing(res: Results, g: Group, set_name: str, metric: str) -> dict[str, float]:
    """Instruction id -> the metric's mean over that phrasing's prompts (pooled over the group's seeds)."""
    fn = ROW_METRICS[metric]
    acc: dict[str, list[float]] = {}
    for r in g.runs:
        for p in res.set_rows(r, set_name):
            acc.setdefault(str(p.get("instruction_id")), []).append(float(bool(fn(p))))
    return {k: float(np.mean(v)) for k, v in sorted(acc.items())}


def _metrics(res: Results, gs: list[Group], s: str) -> list[str]:
    return ["task_valid"] + (["label_accuracy"] if res.labelled([r for g in gs for r in g.runs], s) else [])


def _texts(root: Path) -> dict[str, str]:
    """Phrasing texts by instruction id, from a `delia run` task's OUT/data/task.json (absent: none)."""
    path = root / "data" / "task.json"
    if not path.is_file():
        return {}
    ph = json.loads(path.read_text(encoding="utf-8")).get("phrasings", {})
    out = {}
    for s in ("seen", "unseen"):
        texts = ph.get(s) or []
        width = len(str(len(texts) - 1))
        out.update({f"{s}/{i:0{width}d}": t for i, t in enumerate(texts)})
    return out


def phrasing_section(res: Results, gs: list[Group], sets: list[str]) -> list[str]:
    """The markdown section: a summary per method and set, then one row per phrasing of each set."""
    live = [g for g in gs if not g.twin_of]
    multi = [s for s in sets if any(len(per_phrasing(res, g, s, "task_valid")) >= MIN_PHRASINGS for g in live)]
    if not multi or not live:
        return []
    lines = ["## Robustness per phrasing", "",
             "Each method's score under each phrasing (pooled over seeds); min / mean / max / std are over the "
             "phrasings of the set. Unseen phrasings occur in no training row.", ""]
    rows = []
    for s in multi:
        for m in _metrics(res, live, s):
            for g in live:
                vals = list(per_phrasing(res, g, s, m).values())
                if vals:
                    rows.append([g.label, s, METRIC_NAMES[m], str(len(vals)), pct(min(vals)), pct(float(np.mean(vals))),
                                 pct(max(vals)), pct(float(np.std(vals)))])
    lines += md_table(["method", "set", "metric", "phrasings", "min", "mean", "max", "std"], rows) + [""]
    texts = _texts(res.root)
    for s in multi:
        for m in _metrics(res, live, s):
            per = {g.label: per_phrasing(res, g, s, m) for g in live}
            ids = sorted({i for d in per.values() for i in d})
            lines += [f"### `{s}` phrasings: {METRIC_NAMES[m]} (%)", ""]
            body = [[f"`{i}`", *(pct(per[g.label][i]) if i in per[g.label] else "–" for g in live),
                     texts.get(i, "").replace("|", "\\|")] for i in ids]
            lines += md_table(["phrasing", *(g.label for g in live), "text"], body) + [""]
    return lines


def phrasing_figure(res: Results, gs: list[Group], sets: list[str], figs: Path) -> tuple[str | None, str]:
    """Task-valid accuracy per phrasing (dots) and the mean (bar) per method, one panel per set."""
    live = [g for g in gs if not g.twin_of]
    panels = [s for s in sets if any(len(per_phrasing(res, g, s, "task_valid")) >= MIN_PHRASINGS for g in live)]
    if not panels:
        return None, ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(max(4.5, 1.2 * len(live) + 2) * len(panels), 3.8),
                             squeeze=False)
    for ax, s in zip(axes[0], panels):
        for x, g in enumerate(live):
            vals = np.array(list(per_phrasing(res, g, s, "task_valid").values()))
            if not len(vals):
                continue
            ax.bar(x, 100 * vals.mean(), 0.6, color="tab:blue", alpha=0.35)
            jitter = np.linspace(-0.18, 0.18, len(vals)) if len(vals) > 1 else np.zeros(1)
            ax.scatter(x + jitter, 100 * vals, s=14, color="tab:blue", zorder=3)
        ax.set_xticks(range(len(live)), [g.label for g in live], rotation=30, ha="right")
        ax.set(ylim=(0, 105), ylabel="task-valid (%)", title=f"{s}: each dot = one phrasing")
    fig.tight_layout()
    name = "phrasings.png"
    fig.savefig(figs / name, dpi=120)
    plt.close(fig)
    return name, "Task-valid accuracy per phrasing (dots) and its mean (bar), per method"

"""The report's drift section: how far each tuned model moved from the base on held-out general queries.

Per query (a held-out Alpaca query the base answered greedily): the mean per-token NLL of the base's answer under
the model, and whether the model's own greedy answer leaks the task format. Read from each run's `drift` step
(`drift.jsonl`); intervals are cluster bootstraps over queries and seeds (`stats.cluster_bootstrap`), paired
differences are per query. Each query counts once (the per-query mean NLL), so these numbers differ slightly from
the token-weighted `drift_nll` column of results.csv.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from delia.experiments.compare import Group, md_table, pairs
from delia.experiments.results import Results
from delia.experiments.stats import NAN, Interval, cluster_bootstrap

Table = dict[str, dict[str, float]]  # query id -> {"nll": ..., "leak": 0/1}


def drift_rows(res: Results, run: dict[str, Any]) -> Table:
    """query id -> {nll, leak} of one run's drift step ({} when it has none)."""
    step = run["steps"].get("drift")
    path = res.root / step / "drift.jsonl" if step else None
    if path is None or not path.exists():
        return {}
    out: Table = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            if r.get("nll") is not None:
                out[str(r["id"])] = {"nll": float(r["nll"]), "leak": float(bool(r.get("leak")))}
    return out


def _matrix(res: Results, runs: list[dict[str, Any]], metric: str,
            keys: list[str] | None = None) -> tuple[np.ndarray, list[str]]:
    per = [t for t in (drift_rows(res, r) for r in runs) if t]
    if not per:
        return np.zeros((0, 0)), []
    if keys is None:
        keys = sorted(set(per[0]).intersection(*per[1:]))
    return np.array([[t[k][metric] for k in keys] for t in per]), keys


def drift_interval(res: Results, g: Group, metric: str) -> Interval:
    """A group's mean per-query `metric` ("nll" or "leak") over queries and seeds, with its cluster bootstrap."""
    a, keys = _matrix(res, g.runs, metric)
    return cluster_bootstrap(a, keys) if keys else NAN


def drift_paired(res: Results, a: Group, b: Group, metric: str) -> Interval:
    """Paired per-query difference A - B of `metric` over the queries both have."""
    _, ka = _matrix(res, a.runs, metric)
    _, kb = _matrix(res, b.runs, metric)
    keys = sorted(set(ka) & set(kb))
    if not keys:
        return NAN
    return cluster_bootstrap(_matrix(res, a.runs, metric, keys)[0], keys, _matrix(res, b.runs, metric, keys)[0])


def _f(x: float, nd: int = 3) -> str:
    return "–" if np.isnan(x) else f"{x:.{nd}f}"


def drift_section(res: Results, gs: list[Group]) -> list[str]:
    """Markdown lines: per-method drift with intervals, then paired differences; [] when no run has drift."""
    live = [g for g in gs if not g.twin_of]
    rows = []
    for g in live:
        nll, leak = drift_interval(res, g, "nll"), drift_interval(res, g, "leak")
        if not nll.n_keys:
            continue
        rows.append([g.label, str(g.seeds), f"{_f(nll.mean)} [{_f(nll.low)}, {_f(nll.high)}]",
                     f"{100 * leak.mean:.1f} [{100 * leak.low:.1f}, {100 * leak.high:.1f}]", str(nll.n_keys)])
    if not rows:
        return []
    lines = ["## Drift from the base model (held-out general queries)", "",
             "NLL: mean per-token negative log-likelihood of the base model's own greedy answer, per query, under "
             "each model (lower = closer to the base; the base itself scores its own answers). Leak: share of the "
             "model's own greedy answers that come out in the task's format. 95% cluster bootstrap over queries "
             "and seeds.", ""]
    lines += md_table(["method", "seeds", "drift NLL [95%]", "leak % [95%]", "queries"], rows)
    diffs = []
    refs = [(a, b) for a, b in pairs(live)] + [(g, o) for g in live if g.trained and g.method != "delia"
                                               for o in live if o.method == "original"]
    for a, b in refs:
        for metric, scale, name in (("nll", 1.0, "drift NLL"), ("leak", 100.0, "leak %")):
            d = drift_paired(res, a, b, metric)
            if d.n_keys:
                diffs.append([a.label, b.label, name, f"{scale * d.mean:+.3f}" if scale == 1 else f"{scale * d.mean:+.1f}",
                              f"[{scale * d.low:+.3f}, {scale * d.high:+.3f}]" if scale == 1 else
                              f"[{scale * d.low:+.1f}, {scale * d.high:+.1f}]", "yes" if d.significant else "no"])
    if diffs:
        lines += ["", "Paired per-query differences A - B (negative NLL difference = A stayed closer to the base):", ""]
        lines += md_table(["A", "B", "metric", "A - B", "95% interval", "significant"], diffs)
    return lines


def drift_verdict(res: Results, gs: list[Group]) -> list[str]:
    """One verdict line per DELIA-vs-reference pair on drift NLL (for the report's opening)."""
    live = [g for g in gs if not g.twin_of]
    out = []
    for a, b in pairs(live):
        if a.method != "delia":
            continue
        d = drift_paired(res, a, b, "nll")
        if d.n_keys:
            out.append(f"- **{a.label} vs {b.label}**, drift from the base (NLL of the base's own answers to "
                       f"{d.n_keys} held-out queries): {d.mean:+.3f} [{d.low:+.3f}, {d.high:+.3f}], "
                       f"{'significant' if d.significant else 'not significant'} (negative = DELIA stayed closer).")
    return out


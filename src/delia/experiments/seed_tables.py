"""Seed-level paired comparisons: how far apart training runs land, each training seed one observation.

The report's cluster bootstrap resamples test examples and each method's seeds; with 2-3 seeds its interval is
mostly the sampling of examples, and one seed that breaks (DELIA's ratio-10 seed 3 on halu100: 61% task-valid
where seeds 1-2 scored 94-96%) moves a mean further than that interval suggests. Here DELIA and its control are
paired by training seed (the same seed draws the same paraphrases and data order), each seed's difference is one
observation, and the interval is Student's t over the seeds (`stats.seed_interval`): wide with three seeds, as it
should be.

Scores are per run: from an experiment's saved predictions (`from_results`, for the report) or from results.csv
files (`from_csv`, for `delia seeds`), so runs made in parts, in other sessions or on other machines combine.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from delia.errors import UserError
from delia.evaluation import metrics as M
from delia.experiments.compare import Group, md_table, pairs
from delia.experiments.results import Results
from delia.experiments.stats import Interval, seed_interval

SCORES = ("task_valid", "label_accuracy")  # per instruction set, as SET.METRIC
DRIFT = "drift_nll"  # results.csv's token-weighted NLL of the base's answers under the model
NAMES = {"task_valid": "task-valid", "label_accuracy": "label accuracy", DRIFT: "drift NLL"}


class SeedsError(UserError, ValueError):
    """A results.csv that cannot be combined (missing, malformed, or a run that two files both hold)."""


@dataclass(frozen=True)
class RunScore:
    """One training run's scores: `values` maps "SET.task_valid", "SET.label_accuracy" and "drift_nll"."""

    method: str
    ratio: float | None
    seed: int
    values: dict[str, float] = field(hash=False)
    source: str = ""

    @property
    def label(self) -> str:
        return self.method if self.ratio is None else f"{self.method} (ratio {self.ratio:g})"


@dataclass
class SeedComparison:
    """A - B per common training seed on one metric, with the t interval over those seeds."""

    a: str
    b: str
    metric: str  # "SET.task_valid", "SET.label_accuracy" or "drift_nll"
    seeds: list[tuple[int, float, float]]  # (seed, A, B)
    diff: Interval

    @property
    def scale(self) -> float:
        return 1.0 if self.metric == DRIFT else 100.0


def from_results(res: Results, gs: list[Group]) -> list[RunScore]:
    """Every seeded run of the trained groups, scored from its saved predictions (as the report's tables are);
    drift is the run's `drift_nll`."""
    out = []
    for g in gs:
        if g.twin_of or not g.trained:
            continue
        for r in g.runs:
            if r.get("seed") is None:
                continue
            values: dict[str, float] = {}
            for s in res.sets():
                rows = res.set_rows(r, s)
                if rows and "task_valid" in rows[0]:
                    values[f"{s}.task_valid"] = M.compute("task_valid", rows)
                    if res.labelled([r], s):
                        values[f"{s}.label_accuracy"] = M.compute("label_accuracy", rows)
            if r["metrics"].get(DRIFT) is not None:
                values[DRIFT] = float(r["metrics"][DRIFT])
            out.append(RunScore(g.method, g.ratio, int(r["seed"]), values, r["run"]))
    return out


def _float(text: str | None) -> float | None:
    return None if text in (None, "") else float(text)


def from_csv(paths: list[Path]) -> list[RunScore]:
    """Seeded runs from results.csv files (the `delia experiment` / `delia report` output). A run (method, ratio,
    size, seed) held by two files is an error naming both: say which to use by passing only that file."""
    out: list[RunScore] = []
    where: dict[tuple, str] = {}
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise SeedsError(f"{path}: no such results.csv")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = {"run", "method", "ratio", "seed"} - set(reader.fieldnames or [])
            if missing:
                raise SeedsError(f"{path}: line 1: not a results.csv (no column {', '.join(sorted(missing))})")
            for line, row in enumerate(reader, start=2):
                if row["seed"] in (None, ""):
                    continue  # an untrained run (the base model)
                try:
                    seed, ratio = int(float(row["seed"])), _float(row["ratio"])
                    values = {k: float(v) for k, v in row.items()
                              if v not in (None, "") and (k == DRIFT or (k.count(".") == 1
                                                                          and k.split(".")[1] in SCORES))}
                except ValueError as e:
                    raise SeedsError(f"{path}: line {line}: run {row['run']!r}: {e}") from None
                key = (row["method"], ratio, row.get("size"), seed)
                here = f"{path}:{line}"
                if key in where:
                    raise SeedsError(f"{here}: run {row['run']!r} is also in {where[key]}; pass only the file whose "
                                     "run you mean")
                where[key] = here
                out.append(RunScore(row["method"], ratio, seed, values, here))
    return out


def compare_seeds(scores: list[RunScore], a: tuple[str, float | None], b: tuple[str, float | None],
                  metrics: list[str]) -> list[SeedComparison]:
    """A - B per training seed both have, for each metric both report; a (method, ratio) with ratio None matches
    a method run without a ratio (CIT)."""
    def runs(spec: tuple[str, float | None]) -> dict[int, RunScore]:
        return {s.seed: s for s in scores if (s.method, s.ratio) == spec}

    ra, rb = runs(a), runs(b)
    common = sorted(set(ra) & set(rb))
    out = []
    for m in metrics:
        seeds = [(s, ra[s].values[m], rb[s].values[m]) for s in common
                 if m in ra[s].values and m in rb[s].values
                 and not math.isnan(ra[s].values[m]) and not math.isnan(rb[s].values[m])]
        if seeds:
            label = lambda spec: spec[0] if spec[1] is None else f"{spec[0]} (ratio {spec[1]:g})"  # noqa: E731
            out.append(SeedComparison(label(a), label(b), m, seeds, seed_interval([x - y for _, x, y in seeds])))
    return out


def report_comparisons(res: Results, gs: list[Group], sets: list[str]) -> list[SeedComparison]:
    """DELIA vs each trained control of the verdict (`compare.pairs`), on every set's task-valid and label
    accuracy and on drift, where the two share at least two seeds."""
    scores = from_results(res, gs)
    metrics = [f"{s}.{m}" for s in sets for m in SCORES] + [DRIFT]
    out = []
    for ga, gb in pairs(gs):
        if ga.method == "delia" and gb.trained:
            out += [c for c in compare_seeds(scores, (ga.method, ga.ratio), (gb.method, gb.ratio), metrics)
                    if len(c.seeds) >= 2]
    return out


def _v(x: float, scale: float) -> str:
    return f"{scale * x:.1f}" if scale > 1 else f"{x:.3f}"


def _d(x: float, scale: float) -> str:
    return f"{scale * x:+.1f}" if scale > 1 else f"{x:+.3f}"


def _metric(m: str) -> str:
    return NAMES[DRIFT] if m == DRIFT else f"{m.split('.')[0]} {NAMES[m.split('.')[1]]}"


def rows(comps: list[SeedComparison]) -> list[list[str]]:
    """Table rows: A, B, metric, each seed's A / B / A - B, the mean difference, its t interval, significance."""
    out = []
    for c in comps:
        per = "; ".join(f"{s}: {_v(x, c.scale)} / {_v(y, c.scale)} ({_d(x - y, c.scale)})" for s, x, y in c.seeds)
        iv = c.diff
        span = "–" if math.isnan(iv.low) else f"[{_d(iv.low, c.scale)}, {_d(iv.high, c.scale)}]"
        out.append([c.a, c.b, _metric(c.metric), str(len(c.seeds)), per, _d(iv.mean, c.scale), span,
                    "yes" if iv.significant else "no"])
    return out


HEADER = ["A", "B", "metric", "seeds", "seed: A / B (A - B)", "mean A - B", "95% t interval over seeds",
          "significant"]
EXPLAIN = ("Each training seed is one observation: A and B paired by seed (the same seed draws the same "
           "paraphrases and data order), the difference per seed, and a Student-t interval over the seeds. This "
           "is the spread between training runs, which the report's cluster bootstrap covers only as far as 2-3 "
           "resampled seeds can; with 3 seeds only a large, consistent difference is significant. Points for "
           "accuracies; drift is the token-weighted NLL of the base's answers (negative = A stayed closer).")


def seed_section(comps: list[SeedComparison]) -> list[str]:
    """The report's "Between training runs" section; [] when no pair shares two seeds."""
    if not comps:
        return []
    return ["## Between training runs (seed by seed)", "", EXPLAIN, ""] + md_table(HEADER, rows(comps))


def seed_verdict(comps: list[SeedComparison]) -> list[str]:
    """One line per comparison on the headline (task-valid) and drift, for the verdict."""
    focus = [c for c in comps if c.metric == DRIFT or c.metric.endswith(".task_valid")]
    if not focus:
        return []
    parts = []
    for c in focus:
        iv = c.diff
        parts.append(f"{c.a} vs {c.b}, {_metric(c.metric)}: {_d(iv.mean, c.scale)} "
                     f"[{_d(iv.low, c.scale)}, {_d(iv.high, c.scale)}] over {len(c.seeds)} seeds"
                     + (" (significant)" if iv.significant else ""))
    return ["", "**Seed by seed** (each training seed one observation, 95% Student-t interval over seeds; see "
                "Between training runs): " + "; ".join(parts) + "."]

"""`run_experiment`: execute a plan step by step, skipping finished steps, then write per-run records and
results.csv/json. A step is finished when its directory holds done.json; a killed run leaves none, so the
next call redoes (or, for stages that resume, continues) exactly the unfinished steps."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from delia.config import to_dict
from delia.experiments.config import split_method
from delia.experiments.plan import Plan, Step
from delia.experiments.results import collect
from delia.experiments.stages import run_step
from delia.files import write_text_atomic

log = logging.getLogger(__name__)
DONE = "done.json"


def git_info() -> dict[str, Any]:
    """The code version: commit SHA and whether the working tree had uncommitted changes."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"sha": git("rev-parse", "HEAD") or None, "dirty": dirty}


def step_done(step: Step, root: Path) -> bool:
    """Finished, and (for the growing sample cache) holding at least the rows this plan needs."""
    done = step.dir(root) / DONE
    if not done.exists():
        return False
    try:
        record = json.loads(done.read_text())
    except ValueError:  # written atomically since; an older, torn one means "not finished"
        return False
    if step.kind == "sample":
        return record.get("limit", 0) >= step.volatile.get("limit", 0)
    if step.kind == "slice":
        # A topped-up slice depends on the build's exclusion rule, which is not in its key: redo it under another
        # rule (or under allow_repeat, which takes no top-up), so its content is always the same for the same rule.
        s = record.get("summary") or {}
        if s.get("topped_up") and (s.get("need"), s.get("exclude_truncated")) != (
                step.volatile.get("need"), step.volatile.get("exclude_truncated")):
            return False
    return True


def step_record(step: Step) -> dict[str, Any]:
    return {"kind": step.kind, "key": step.key, "config": step.resolved, "volatile": step.volatile,
            "fingerprint": step.fingerprint, "inputs": {r: f"{s.kind}/{s.key}" for r, s in step.inputs.items()}}


@dataclass
class Outcome:
    """What a call did: steps run, skipped, failed (with the error) and blocked by a failed input."""

    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: list[str] = field(default_factory=list)
    seconds: float = 0.0
    results: list[dict[str, Any]] = field(default_factory=list)


def run_experiment(plan: Plan, on_step=None) -> Outcome:
    """Run every unfinished step of `plan` in order, then write runs/, results.json and results.csv.

    Args:
        plan: the expanded grid (`delia.experiments.plan.expand`).
        on_step: callback(index, total, step, status) for progress display ("start", "skip", "done", "fail").
    Returns:
        The Outcome. A failing step does not stop the others; steps that need its output are blocked.
    """
    root = Path(plan.exp.out_dir)
    root.mkdir(parents=True, exist_ok=True)
    (root / "experiment.yaml").write_text(yaml.safe_dump(to_dict(plan.exp), sort_keys=False))
    git = git_info()
    out, t0 = Outcome(), time.perf_counter()
    bad: set[str] = set()
    for i, step in enumerate(plan.steps):
        name = f"{step.kind}/{step.key}"

        def notify(status: str, i: int = i, step: Step = step) -> None:
            if on_step:
                on_step(i, len(plan.steps), step, status)
        if any(s.key in bad for s in step.inputs.values()):
            bad.add(step.key)
            out.blocked.append(name)
            notify("blocked")
            continue
        if step_done(step, root):
            out.skipped.append(name)
            notify("skip")
            continue
        d = step.dir(root)
        d.mkdir(parents=True, exist_ok=True)
        (d / "step.yaml").write_text(yaml.safe_dump(step_record(step), sort_keys=False))
        notify("start")
        s0, c0 = time.perf_counter(), time.process_time()
        try:
            summary = run_step(step.kind, step.run_config,
                               {r: s.dir(root) for r, s in step.inputs.items()}, d)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # one broken cell must not cost the rest of a long grid
            bad.add(step.key)
            out.failed[name] = f"{type(e).__name__}: {e}"
            (d / "error.txt").write_text(traceback.format_exc())
            log.error("%s failed: %s (traceback in %s)", name, e, d / "error.txt")
            notify("fail")
            continue
        # CPU seconds next to wall seconds: on a shared machine the wall clock measures the neighbours too
        record = {"seconds": round(time.perf_counter() - s0, 2), "cpu_seconds": round(time.process_time() - c0, 2),
                  "git": git,
                  "finished": time.strftime("%Y-%m-%dT%H:%M:%S"), "summary": _jsonable(summary)}
        if step.kind == "sample":
            record["limit"] = step.volatile.get("limit", 0)
        write_text_atomic(d / DONE, json.dumps(record, indent=2) + "\n")  # the step's completion mark: never torn
        (d / "error.txt").unlink(missing_ok=True)
        out.ran.append(name)
        notify("done")
    out.seconds = time.perf_counter() - t0
    out.results = write_results(plan, git, bad)
    return out


def write_results(plan: Plan, git: dict[str, Any], bad: set[str] = frozenset()) -> list[dict[str, Any]]:
    """runs/<method>/<axes>/{config.yaml, metrics.json} for every finished run, and results.json/csv."""
    root = Path(plan.exp.out_dir)
    results = []
    for run in plan.runs:
        if not all(step_done(s, root) for s in run.steps.values()):
            continue
        row = {"run": run.id, "method": run.method, **{k: run.axes.get(k) for k in ("size", "ratio", "seed")},
               "steps": {n: f"steps/{s.kind}/{s.key}" for n, s in run.steps.items()}}
        row["metrics"] = collect({n: s.dir(root) for n, s in run.steps.items()})
        run_dir = root / "runs" / run.id
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.yaml").write_text(yaml.safe_dump(
            {"method": run.method, "axes": run.axes, "git": git, "method_options": run.options,
             **({"train_recipe": plan.exp.recipes[recipe]} if (recipe := split_method(run.method)[1]) else {}),
             "steps": {n: step_record(s) for n, s in run.steps.items()}}, sort_keys=False))
        (run_dir / "metrics.json").write_text(json.dumps(row, indent=2) + "\n")
        results.append(row)
    (root / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_csv(results, root / "results.csv")
    return results


def write_csv(results: list[dict[str, Any]], path: Path) -> None:
    """One row per run: the grid point and every scalar metric."""
    import csv

    cols = ["run", "method", "size", "ratio", "seed"]
    metric_cols = sorted({k for r in results for k, v in r["metrics"].items() if not isinstance(v, (list, dict))})
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + metric_cols)
        for r in results:
            w.writerow([r[c] for c in cols] + [_fmt(r["metrics"].get(c)) for c in metric_cols])


def _fmt(v: Any) -> Any:
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else v


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))

"""The 100-row ratio-10 DELIA run before and after #14's speed work: a measured slice, extrapolated to the full run.

The run is `configs/halu100.yaml` at ratio 10, seed 1, method delia, as the grid runs it (`delia experiment
configs/halu100.yaml grid.ratios=[10] grid.seeds=[1] grid.methods=[delia] threads=2`): it samples 1,302 Alpaca
queries (256 new tokens, batch 32) and trains LoRA on 1,100 rows (276 steps of 8, max_length 640). This script
plans that experiment with delia's own planner, takes its sample, build and train step configs unchanged, and runs
a proportional slice of the two long stages with two versions of delia, each stage in a fresh subprocess whose
PYTHONPATH holds only that version's src/:

- sample: the first --n queries of the same query file, with the sample step's settings (`limit` = n);
- train: --steps optimizer steps (the train step's TrainConfig with `max_steps`) on rows built as the build step
  builds them (ratio 10, its seed, the shipped halu rows and phrasings) from the first S halu train rows and the
  new version's answers in query order, S = usable answers / 10 (at most 100). Both versions train on these rows.

OLD is the last commit before the speed work (35dce29 split generation into prefill/kvcache/next_token, removed
finished rows lazily and fused top-p; its parent is what the issue was filed against), exported with `git archive`
into /tmp (no worktree is registered). NEW is this checkout. Neither version's src is changed: the two share the
same stage APIs (SampleConfig/run_sample, TrainConfig/run_train; checked when written).

Prints per stage and version: rows/s and tokens/s (new tokens for sampling, non-pad tokens for training), the
speed-up, and an EXTRAPOLATION of each full stage from the slice (sampling: load time + generation time x
1302 / n, which ignores the slice's shorter draining tail; training: slice wall + (276 - steps) x the steady
seconds per step). With --measured EXPDIR it also prints the grid's own wall seconds of those steps (their
done.json) beside the extrapolation. Under the benchmark lock, on a quiet machine:

    flock /tmp/delia-cpu.lock python benchmarks/pipeline.py --quick     # 48 queries, 3 steps (a few minutes)
    flock /tmp/delia-cpu.lock python benchmarks/pipeline.py --json pipeline.json     # 128 queries, 8 steps

--no-native-bf16 is not offered: the old revision predates DELIA_NATIVE_BF16 and would still pick bf16.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "halu100.yaml"
OLD_REV = "35dce29^"  # the parent of the first speed commit of #14
GRID = ["grid.ratios=[10]", "grid.seeds=[1]", "grid.methods=[delia]", "methods={}"]  # no other methods' options


# ---------------------------------------------------------------- worker (runs under either version's src/)


def worker(stage: str, config: dict[str, Any], result: Path) -> None:
    """Run one stage with the delia on PYTHONPATH; write its timings to `result`."""
    import delia
    from delia.config import from_dict
    from delia.models import ensure_local

    out: dict[str, Any] = {"delia": str(Path(delia.__file__).parent)}
    if stage == "sample":
        from delia.sampling import SampleConfig, run_sample

        cfg = from_dict(SampleConfig, config, where="sample")
        ensure_local(cfg.model)  # a first-time GGUF conversion stays out of the timing
        t = time.perf_counter()
        summary = run_sample(cfg)
        out.update(wall_s=time.perf_counter() - t, **summary.to_dict())
    else:
        from delia.training import TrainConfig, run_train

        cfg = from_dict(TrainConfig, config, where="train")
        ensure_local(cfg.model)
        t = time.perf_counter()
        run_train(cfg)
        out["wall_s"] = time.perf_counter() - t
        log = [e for e in json.loads((Path(cfg.out) / "train_log.json").read_text()) if "num_tokens" in e]
        first, last = log[0], log[-1]  # steady state: the steps after the first
        span = last["time"] - first["time"]
        out.update(steps=last["step"], steady_steps=last["step"] - first["step"], steady_s=span,
                   steady_tokens=last["num_tokens"] - first["num_tokens"])
    result.write_text(json.dumps(out))


def run_worker(src: Path, stage: str, config: dict[str, Any], work: Path, tag: str) -> dict[str, Any]:
    """One stage in a fresh process whose PYTHONPATH is only `src` (no other delia can be imported first)."""
    cfg_file, result = work / f"{tag}-{stage}.config.json", work / f"{tag}-{stage}.result.json"
    cfg_file.write_text(json.dumps(config))
    env = {**os.environ, "PYTHONPATH": str(src)}
    print(f"--- {stage}, {tag} ({src})", flush=True)
    subprocess.run([sys.executable, __file__, "--worker", stage, str(cfg_file), str(result)], env=env, check=True)
    got = json.loads(result.read_text())
    if Path(got["delia"]).resolve() != (src / "delia").resolve():
        raise RuntimeError(f"{tag}: ran the delia in {got['delia']}, not {src}")
    return got


# ---------------------------------------------------------------- the two versions and the planned steps


def old_src(rev: str) -> Path:
    """`rev`'s src/ exported once into /tmp/delia-src-<sha>/ (git archive: no worktree to clean up)."""
    sha = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    dest = Path(tempfile.gettempdir()) / f"delia-src-{sha[:12]}"
    if not (dest / "src" / "delia" / "__init__.py").is_file():
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", sha, "src"], check=True, capture_output=True).stdout
        with tarfile.open(fileobj=io.BytesIO(tar)) as t:
            t.extractall(dest, filter="data")
    return dest / "src"


def planned(threads: int) -> dict[str, Any]:
    """The delia run's sample, slice, build, downstream subset and train steps, as the grid plans them."""
    from delia.config import load_config
    from delia.experiments.config import ExperimentConfig
    from delia.experiments.plan import expand

    exp = load_config(ExperimentConfig, CONFIG, [*GRID, f"threads={threads}"])
    (run,) = [r for r in expand(exp).runs if r.method == "delia"]
    train = run.steps["train"]
    build = train.inputs["data"]
    sl = build.inputs["diverse"]
    return {"train": train, "build": build, "slice": sl, "sample": sl.inputs["cache"],
            "subset": build.inputs["downstream"]}


def build_rows(steps: dict[str, Any], cache: Path, queries: Path, n: int, work: Path) -> tuple[Path, dict, bool]:
    """The build step on the slice: the first S halu rows + ratio x S of the answers (in query order).

    Returns (train.jsonl, the build's row counts, whether answers had to repeat: only at smoke-test sizes)."""
    from delia.config import from_dict
    from delia.data.sources import resolve_source
    from delia.mixing import BuildConfig, build
    from delia.mixing.cache import exclusion_reason
    from delia.sampling import load_queries

    rows = {}
    for line in cache.read_text(encoding="utf-8").splitlines():
        r = json.loads(line)
        rows.setdefault(r["id"], r)
    ordered = [rows[q.id] for q in load_queries(queries, limit=n) if q.id in rows]
    cfg = dict(steps["build"].run_config)
    usable = sum(not exclusion_reason(r["messages"][-1]["content"], r.get("meta") or {},
                                      cfg.get("exclude_truncated", True)) for r in ordered)
    ratio, size = float(cfg["ratio"]), int(steps["subset"].config["n"])
    s = max(1, min(size, int(usable // ratio)))
    repeat = usable < ratio * s
    (work / "diverse.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in ordered))
    halu = resolve_source(steps["subset"].volatile["path"]).read_text(encoding="utf-8").splitlines(keepends=True)
    (work / "downstream.jsonl").write_text("".join(halu[:s]), encoding="utf-8")
    cfg.update(downstream=str(work / "downstream.jsonl"), diverse=str(work / "diverse.jsonl"),
               out=str(work / "build"), allow_repeat=repeat or cfg.get("allow_repeat", False))
    manifest = build(from_dict(BuildConfig, cfg, where="build"))
    return work / "build" / "train.jsonl", manifest["counts"], repeat


# ---------------------------------------------------------------- main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="sample queries in the slice (the first N)")
    ap.add_argument("--steps", type=int, default=8, help="training steps in the slice (>= 2: the first is warm-up)")
    ap.add_argument("--quick", action="store_true", help="48 queries, 3 steps")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per stage (the grid's threads=2)")
    ap.add_argument("--old", default=OLD_REV, help="git revision of the 'before' code")
    ap.add_argument("--measured", type=Path, help="experiment directory of the grid's full ratio-10 run: print "
                                                  "its steps' wall seconds (done.json) beside the extrapolation")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker[0], json.loads(Path(a.worker[1]).read_text()), Path(a.worker[2]))
    if a.quick:
        a.n, a.steps = 48, 3
    if a.n < 1 or a.steps < 2:
        ap.error("--n must be >= 1 and --steps >= 2 (the first step is warm-up)")

    from delia.config import from_dict
    from delia.data.sources import resolve_source
    from delia.mixing.schedule import diverse_count
    from delia.training.config import TrainConfig, optimizer_steps

    versions = {"old": old_src(a.old), "new": ROOT / "src"}
    steps = planned(a.threads)
    sample_cfg, train_cfg = dict(steps["sample"].run_config), dict(steps["train"].run_config)
    size = int(steps["subset"].config["n"])
    full_queries = int(steps["slice"].config["n_queries"])
    full_rows = size + diverse_count(float(steps["build"].config["ratio"]), size)[0]
    full_steps = optimizer_steps(from_dict(TrainConfig, {**train_cfg, "data": "-", "out": "-"}), full_rows)
    queries = resolve_source(sample_cfg["queries"])
    work = Path(tempfile.mkdtemp(prefix="delia-bench-pipeline-"))
    load = os.getloadavg()[0]

    res: dict[str, dict[str, Any]] = {"sample": {}, "train": {}}
    for tag, src in versions.items():
        res["sample"][tag] = run_worker(src, "sample", {**sample_cfg, "queries": str(queries), "limit": a.n,
                                                        "out": str(work / tag / "cache.jsonl")}, work, tag)
    data, counts, repeat = build_rows(steps, work / "new" / "cache.jsonl", queries, a.n, work)
    for tag, src in versions.items():
        res["train"][tag] = run_worker(src, "train", {**train_cfg, "data": str(data), "max_steps": a.steps,
                                                      "out": str(work / tag / "train")}, work, tag)

    rows_per_step = int(train_cfg["batch_size"])
    for tag in versions:
        sm, tr = res["sample"][tag], res["train"][tag]
        sm["rows_per_s"], sm["tokens_per_s"] = sm["done"] / sm["generate_seconds"], sm["new_tokens"] / sm[
            "generate_seconds"]
        sm["full_s"] = (sm["wall_s"] - sm["generate_seconds"]) + sm["generate_seconds"] * full_queries / sm["done"]
        step_s = tr["steady_s"] / tr["steady_steps"]
        tr.update(step_s=step_s, rows_per_s=rows_per_step / step_s, tokens_per_s=tr["steady_tokens"] / tr["steady_s"],
                  full_s=tr["wall_s"] + (full_steps - tr["steps"]) * step_s)

    measured = _measured(a.measured, steps) if a.measured else {}
    print(f"\nconfigs/halu100.yaml {' '.join(GRID)} threads={a.threads}; full run: sample {full_queries} queries "
          f"(max_new_tokens {sample_cfg['max_new_tokens']}), train {full_rows} rows = {full_steps} steps of "
          f"{rows_per_step} (max_length {train_cfg['max_length']})")
    print(f"slice: sample the first {a.n} queries; train {a.steps} steps on {counts['downstream']} halu + "
          f"{counts['diverse']} diverse rows built from the new version's answers"
          f"{' (ANSWERS REPEATED: smoke-test size)' if repeat else ''}; train rows/s and tokens/s: steps after the first")
    print(f"old = {a.old} ({versions['old']}), new = this checkout; load average {load:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (2 cores; > 2 = contended)")
    print(f"{'stage':<7}{'ver':<5}{'rows':>6}{'seconds':>9}{'rows/s':>8}{'tokens/s':>10}"
          f"{'full stage, EXTRAPOLATED':>26}{'measured (grid)':>17}")
    for stage in ("sample", "train"):
        for tag in versions:
            r = res[stage][tag]
            rows, secs = (r["done"], r["generate_seconds"]) if stage == "sample" else (
                r["steady_steps"] * rows_per_step, r["steady_s"])
            got = measured.get(stage) if tag == "new" else None
            print(f"{stage:<7}{tag:<5}{rows:>6}{secs:>9.1f}{r['rows_per_s']:>8.2f}{r['tokens_per_s']:>10.1f}"
                  f"{_hms(r['full_s']):>26}{_hms(got) if got else '':>17}")
        if stage == "sample" and "sample" in measured:
            print("        (the grid's sample seconds cover only the queries its last run added to the shared cache)")
        o, n = res[stage]["old"], res[stage]["new"]
        print(f"{stage:<7}new/old speed-up: {n['tokens_per_s'] / o['tokens_per_s']:.2f}x tokens/s, "
              f"{n['rows_per_s'] / o['rows_per_s']:.2f}x rows/s; full stage old/new {o['full_s'] / n['full_s']:.2f}x")
    tot = {tag: res["sample"][tag]["full_s"] + res["train"][tag]["full_s"] for tag in versions}
    print(f"sample + train, EXTRAPOLATED from the slice: old {_hms(tot['old'])}, new {_hms(tot['new'])} "
          f"({tot['old'] / tot['new']:.2f}x); not counted: build, evaluations, drift")
    if a.json:
        a.json.write_text(json.dumps({"n": a.n, "steps": a.steps, "threads": a.threads, "old": a.old,
                                      "full_queries": full_queries, "full_steps": full_steps, "slice_rows": counts,
                                      "load_avg_before": load, "results": res, "measured": measured,
                                      "extrapolated_total_s": tot}, indent=1, default=str) + "\n")
    shutil.rmtree(work, ignore_errors=True)


def _measured(exp_dir: Path, steps: dict[str, Any]) -> dict[str, float]:
    """The grid's wall seconds of the planned sample and train steps, where finished (done.json). The sample
    step's seconds cover only the queries its last run added to the shared cache."""
    got = {}
    for stage in ("sample", "train"):
        done = steps[stage].dir(exp_dir) / "done.json"
        if done.is_file():
            got[stage] = float(json.loads(done.read_text()).get("seconds", 0.0))
    return got


def _hms(seconds: float) -> str:
    m, s = divmod(round(seconds), 60)
    return f"{m // 60}h{m % 60:02d}m{s:02d}s" if m >= 60 else f"{m}m{s:02d}s"


if __name__ == "__main__":
    main()

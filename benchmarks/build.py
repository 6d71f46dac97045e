"""Time and peak memory of `delia build` at R=520 x 100 rows vs the authors' `datasets` pipeline.

The cache is synthetic (no 52k-row self-sampled cache exists yet): 60,000 interface-1 rows made from
alpaca_5000 (12 copies of each query with distinct ids) with made-up responses of the Alpaca answer's length,
1% of them empty. Both ways run in fresh subprocesses that report their own wall time and peak RSS.

    flock /tmp/delia-bench.lock python benchmarks/build.py [--rows 60000] [--ratio 520]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from delia.data.sources import resolve_source

ROOT = Path(__file__).resolve().parents[1]

MEASURE = """
import json, resource, sys, time
t0 = time.perf_counter()
{body}
print(json.dumps({{"seconds": time.perf_counter() - t0,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}))
"""

NEW = """
from delia.mixing import BuildConfig, build
m = build(BuildConfig(downstream={down!r}, diverse={cache!r}, ratio={ratio}, seed=42, out={out!r}, model=""))
assert m["counts"]["total"] == {total}, m["counts"]
"""

# The official code's mixing (LinesHogan/DELIA): shuffle(42).select(int(ratio*|D|)), concatenate, shuffle(42).
OLD = """
import os
os.environ["HF_DATASETS_CACHE"] = {hf!r}
from datasets import concatenate_datasets, load_dataset, disable_progress_bars
disable_progress_bars()
task = load_dataset("json", data_files={down!r}, split="train").select_columns(["messages"])
div = load_dataset("json", data_files={cache!r}, split="train")
div = div.filter(lambda r: r["messages"][-1]["content"] != "").select_columns(["messages"])
div = div.shuffle(seed=42).select(range(int({ratio} * len(task))))
mixed = concatenate_datasets([task, div]).shuffle(seed=42)
mixed.to_json({out!r} + "/train.jsonl", force_ascii=False)
assert len(mixed) == {total}
"""


def make_cache(path: Path, rows: int) -> None:
    src = [json.loads(x) for x in resolve_source("builtin:diverse/alpaca_5000").read_text().splitlines() if x.strip()]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            r = src[i % len(src)]
            q = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
            resp = "" if i % 100 == 99 else f"Sure (draft {i // len(src)}). {r['output']}"
            f.write(json.dumps({"id": f"alpaca:{i}", "key": f"{i:064x}",
                                "messages": [{"role": "user", "content": q}, {"role": "assistant", "content": resp}],
                                "meta": {"model": "synthetic", "params": {"temperature": 0.7, "top_p": 0.95},
                                         "finish_reason": "stop", "n_new_tokens": len(resp.split())}},
                               ensure_ascii=False) + "\n")


def run(code: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if res.returncode:
        raise SystemExit(res.stderr[-3000:])
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=60_000)
    ap.add_argument("--ratio", type=float, default=520)
    args = ap.parse_args()
    down = str(resolve_source("builtin:halu/train"))
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "cache.jsonl"
        make_cache(cache, args.rows)
        total = int(args.ratio * 100) + 100
        print(f"cache: {args.rows} rows, {cache.stat().st_size / 1e6:.1f} MB; building {total} rows")
        fmt = dict(down=down, cache=str(cache), ratio=args.ratio, total=total, hf=f"{tmp}/hf")
        new = run(MEASURE.format(body=textwrap.dedent(NEW.format(out=f"{tmp}/new", **fmt))))
        Path(f"{tmp}/old").mkdir()
        old = run(MEASURE.format(body=textwrap.dedent(OLD.format(out=f"{tmp}/old", **fmt))))
        again = run(MEASURE.format(body=textwrap.dedent(NEW.format(out=f"{tmp}/new2", **fmt))))
        same = all((Path(f"{tmp}/new") / f).read_bytes() == (Path(f"{tmp}/new2") / f).read_bytes()
                   for f in ("train.jsonl", "manifest.json"))
        print(f"{'':28}{'seconds':>10}{'peak RSS MB':>14}")
        print(f"{'old: datasets pipeline':28}{old['seconds']:>10.2f}{old['peak_rss_mb']:>14.0f}")
        print(f"{'new: delia build':28}{new['seconds']:>10.2f}{new['peak_rss_mb']:>14.0f}")
        print(f"{'new: delia build (again)':28}{again['seconds']:>10.2f}{again['peak_rss_mb']:>14.0f}")
        print(f"ratio old/new: time {old['seconds'] / new['seconds']:.2f}x, "
              f"peak RSS {old['peak_rss_mb'] / new['peak_rss_mb']:.2f}x; two delia builds byte-identical: {same}")


if __name__ == "__main__":
    main()

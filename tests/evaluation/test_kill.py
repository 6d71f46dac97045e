"""SIGKILL of a real `delia eval` process at four points, one after another on one output directory: each rerun
of the same command resumes by itself, and the last one writes the uninterrupted run's predictions.jsonl byte for
byte and its metrics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import delia

KILL = Path(__file__).resolve().parents[1] / "killpoints.py"
# 3 test rows x (1 seen + 1 unseen phrasing) = 6 prompts in 3 generation batches of 2; greedy (the default)
ARGS = ["--data", "builtin:halu/test", "--limit", "3", "--batch-size", "2", "--max-new-tokens", "8", "--dtype", "fp32",
        "threads=1", "bootstrap=20"]


def _eval(point: str, out: Path, model: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(KILL), point, "eval", "--out", str(out), "--model", model, *ARGS]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _lines(path: Path) -> list[str]:
    return path.read_text().split("\n")


def _tmp_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if ".tmp" in p.name)


def test_sigkill_at_four_points_then_rerun_gives_the_uninterrupted_results(tiny_chatty_dir, tmp_path):
    ref = _eval("none", tmp_path / "ref", tiny_chatty_dir)
    assert ref.returncode == 0, ref.stderr[-3000:]
    want = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    assert len({json.loads(x)["raw"] for x in _lines(tmp_path / "ref" / "predictions.jsonl")[:-1]}) > 1

    out = tmp_path / "out"
    cache = out / "generations.jsonl"
    # 1. after the first batch is appended: its 2 rows are on disk, nothing else is written
    k = _eval("gen-batch", out, tiny_chatty_dir)
    assert k.returncode == -9, k.stderr[-2000:]
    assert len(_lines(cache)) == 3 and _lines(cache)[-1] == ""  # 2 whole rows
    assert not (out / "predictions.jsonl").exists() and (out / ".delia.lock").exists()
    # 2. the rerun (lock file still there, its holder dead) generates the other 4 rows; killed halfway through
    # appending their first batch: a torn last line
    k = _eval("torn-append", out, tiny_chatty_dir)
    assert k.returncode == -9 and "another delia process" not in k.stderr, k.stderr[-2000:]
    assert not cache.read_bytes().endswith(b"\n") and len(_lines(cache)) >= 3
    # 3. the rerun cuts the torn line and generates the 4 missing rows; predictions.jsonl is written, then the
    # run is killed with metrics.json complete in its temporary file, not yet renamed
    k = _eval("metrics", out, tiny_chatty_dir)
    assert k.returncode == -9 and "cut a torn last line" in k.stderr, k.stderr[-2000:]
    assert len(_lines(cache)) == 7
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "ref" / "predictions.jsonl").read_bytes()
    assert [n.split(".tmp")[0] for n in _tmp_files(out)] == [".metrics.json"] and not (out / "metrics.json").exists()
    # 4. everything cached: metrics.json written (the dead run's temporary file swept), killed before the plots
    # and summary.md
    k = _eval("summary", out, tiny_chatty_dir)
    assert k.returncode == -9, k.stderr[-2000:]
    assert (out / "metrics.json").exists() and not (out / "summary.md").exists() and _tmp_files(out) == []

    rerun = _eval("none", out, tiny_chatty_dir)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    assert (out / "predictions.jsonl").read_bytes() == (tmp_path / "ref" / "predictions.jsonl").read_bytes()
    got = json.loads((out / "metrics.json").read_text())
    assert got["speed"]["rows_cached"] == 6 and got["speed"]["rows_generated"] == 0
    assert {k: v for k, v in got.items() if k != "speed"} == {k: v for k, v in want.items() if k != "speed"}
    assert len(_lines(cache)) == 7  # no row generated twice
    assert sorted(json.loads(x)["key"] for x in _lines(cache)[:-1]) == sorted(
        json.loads(x)["key"] for x in _lines(tmp_path / "ref" / "generations.jsonl")[:-1])
    assert (out / "summary.md").exists() and _tmp_files(out) == []


"""Writing commands against a read-only, a full and an impossible output location: exit 2 with one line naming
the path and the reason, no traceback, no temporary or torn file left.

Real filesystems, not mocks: each command runs in a private mount namespace (`unshare -r -m`, no root needed
where user namespaces are enabled) with a read-only tmpfs and a tiny tmpfs; skipped where that is unavailable.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import delia

from .mixing.conftest import cache_rows, downstream_rows, write_jsonl


def _can_unshare() -> bool:
    unshare = shutil.which("unshare")
    if not unshare or sys.platform != "linux":
        return False
    return subprocess.run([unshare, "-r", "-m", "true"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="needs `unshare -r -m` (user + mount namespaces)")


def run_on(root: Path, args: list[str], full_kb: int = 64) -> tuple[int, str, Path]:
    """Run `delia ARGS` with ROOT/ro a read-only tmpfs and ROOT/full a `full_kb` KB tmpfs; returns (exit code,
    stderr, a copy of what the command left in ROOT/full)."""
    ro, full, snap = root / "ro", root / "full", root / "snapshot"
    for d in (ro, full, snap):
        d.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    cmd = " ".join(["'" + a.replace("'", "'\\''") + "'" for a in [sys.executable, "-m", "delia", *args]])
    script = (f"mount -t tmpfs -o ro,size=64k tmpfs {ro} && mount -t tmpfs -o size={full_kb}k tmpfs {full} && "
              f"{{ {cmd} 2>{root}/err.txt; echo $? > {root}/rc.txt; cp -a {full}/. {snap}/; }}")
    proc = subprocess.run(["unshare", "-r", "-m", "sh", "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert (root / "rc.txt").exists(), proc.stderr
    return int((root / "rc.txt").read_text()), (root / "err.txt").read_text(), snap


def _left_clean(snap: Path) -> list[str]:
    """Temporary files, torn JSONL lines and unsealed checkpoints left behind."""
    bad = [str(p) for p in snap.rglob("*") if ".tmp" in p.name]
    for p in snap.rglob("*.jsonl"):
        for line in p.read_text().splitlines():
            try:
                json.loads(line)
            except ValueError:
                bad.append(f"{p}: torn line {line[:40]!r}")
    bad += [str(c) for c in snap.rglob("checkpoint-*") if not (c / "delia_checkpoint.json").exists()]
    return bad


@pytest.fixture
def inputs(tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    down = write_jsonl(d / "down.jsonl", downstream_rows(10))
    big = cache_rows(120)
    for r in big:
        r["messages"][1]["content"] *= 200  # ~2 KB per row: train.jsonl outgrows the small tmpfs
    cache = write_jsonl(d / "cache.jsonl", big)
    queries = write_jsonl(d / "q.jsonl", [{"query": f"question {i} " + "pad " * 400} for i in range(40)])
    trans = write_jsonl(d / "t.jsonl", [{"src": f"Halló {i}", "ref": f"Hello {i}", "src_lang": "is",
                                         "tgt_lang": "en"} for i in range(6)])
    return {"down": down, "cache": cache, "queries": queries, "trans": trans}


def _commands(out: Path, i: dict, tiny: str) -> dict[str, list[str]]:
    return {
        "build": ["build", "--downstream", str(i["down"]), "--diverse", str(i["cache"]), "--ratio", "10",
                  "--out", str(out / "build"), "--model", ""],
        "sample": ["sample", "--queries", str(i["queries"]), "--out", str(out / "s" / "cache.jsonl"), "--model",
                   tiny, "--max-new-tokens", "4", "--dtype", "fp32", "--batch-size", "8", "--no-progress"],
        "train": ["train", "--data", str(i["down"]), "--out", str(out / "run"), "--model", tiny, "--max-steps", "2",
                  "batch_size=4", "micro_batch_size=2", "save_steps=1", "report_to=[none]", "max_length=96",
                  "precision=fp32", "threads=1"],
        "eval": ["eval", "--task", "translation", "--data", str(i["trans"]), "--out", str(out / "eval"), "--model",
                 tiny, "--dtype", "fp32", "--max-new-tokens", "4", "bootstrap=0", "analysis.score=off"],
    }


@pytest.mark.parametrize("cmd", ["build", "sample", "train", "eval"])
def test_read_only_output(cmd, inputs, tiny_dir, tmp_path):
    rc, err, _ = run_on(tmp_path, _commands(tmp_path / "ro" / "out", inputs, tiny_dir)[cmd])
    assert rc == 2 and "Traceback" not in err, err
    assert f"{tmp_path / 'ro' / 'out'}" in err and "Read-only file system" in err, err


@pytest.mark.parametrize("cmd,kb", [("build", 64), ("sample", 16), ("train", 64), ("eval", 4)])
def test_full_disk(cmd, kb, inputs, tiny_dir, tmp_path):
    rc, err, snap = run_on(tmp_path, _commands(tmp_path / "full", inputs, tiny_dir)[cmd], full_kb=kb)
    assert rc == 2 and "Traceback" not in err, err
    assert "No space left on device" in err and "free space" in err, err
    assert _left_clean(snap) == []
    if cmd == "build":
        assert not (snap / "build" / "train.jsonl").exists()


def test_output_under_a_file(inputs, tiny_dir, tmp_path):
    from .clirun import run_cli

    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    for cmd, args in _commands(blocker / "sub", inputs, tiny_dir).items():
        if cmd == "train":
            continue  # the same code path as eval (locked_dir); saves a model load
        code, text = run_cli(args)
        assert code == 2 and "Not a directory" in text and "Traceback" not in text, (cmd, text)

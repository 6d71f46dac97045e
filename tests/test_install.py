"""A real install: build the wheel, install it into a clean venv, run `delia` from an empty directory.

What this proves: the wheel carries every packaged data file and the `delia` command, and the installed package
runs a job with nothing from the source tree or `../shared` (issue 11). To keep it offline and fast, the clean venv
reuses this interpreter's installed dependencies through a `.pth` path line; a path line adds that directory to
sys.path without running the `.pth` files inside it, so an editable `delia` installed there stays invisible (the
test checks where `delia` is imported from). The wheel is built with --no-build-isolation (the dev extra pins
setuptools>=77), so no network is needed; `make wheel` builds it the standard, isolated way.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(map(str, cmd))} -> {res.returncode}\n{res.stdout}\n{res.stderr}"
    return res


def _build_wheel(tmp: Path, env: dict[str, str]) -> Path:
    # Build from a copy: setuptools writes build/ and *.egg-info next to the sources, and a stale build/lib can
    # leak deleted modules into the wheel.
    srcdir = tmp / "src-copy"
    srcdir.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, srcdir / name)
    shutil.copytree(ROOT / "src", srcdir / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, srcdir],
         tmp, env)
    wheels = list(dist.glob("*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def test_wheel_installs_and_runs_from_an_empty_directory(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}  # no PYTHONPATH=src leaking in
    # COLUMNS: rich wraps its output at the terminal width
    env.update(DELIA_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1", COLUMNS="160")

    # the wheel: named delia-tune, holds every packaged file and the `delia` command
    wheel = _build_wheel(tmp_path, env)
    assert wheel.name.startswith("delia_tune-"), wheel.name
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(z.read(n).decode() for n in names if n.endswith(".dist-info/entry_points.txt"))
    resources = (ROOT / "src" / "delia" / "resources").rglob("*")
    packaged = {p.relative_to(ROOT / "src").as_posix() for p in resources if p.is_file()}
    assert any(n.endswith(".jsonl.gz") for n in packaged) and "delia/resources/DATA_CARD.md" in packaged
    assert packaged - names == set(), f"packaged data missing from the wheel: {sorted(packaged - names)}"
    assert "delia = delia.cli:main" in entry_points

    # a clean venv; its dependencies come from this interpreter's site-packages through a path line
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], tmp_path, env)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path, env)
                .stdout.strip())
    deps = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "_delia_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    _run([sys.executable, "-m", "pip", "--python", py, "install", "-q", "--no-deps", "--no-index", wheel],
         tmp_path, env)

    # an empty working directory with no `shared` next to it or to any directory above it
    work = tmp_path / "work"
    work.mkdir()
    assert not [d for d in (work, *work.parents) if (d / "shared").exists()]
    where = _run([py, "-c", "import delia, delia.data.sources as s; print(delia.__file__); print(s._root())"],
                 work, env).stdout.split()
    assert all(Path(w).is_relative_to(site / "delia") for w in where), (where, site)

    delia = venv / "bin" / "delia"
    shutil.copy2(ROOT / "configs" / "demo.yaml", work / "demo.yaml")
    plan = _run([delia, "experiment", "demo.yaml", "--dry-run"], work, env)
    out = plan.stdout + plan.stderr
    assert "plan: demo" in out and "4 runs, 17 distinct steps (17 to do)" in out, out
    assert "alpaca_5000" in out  # the self-sampling step reads the packaged queries
    assert sorted(p.name for p in work.iterdir()) == ["demo.yaml"]  # a dry run writes nothing

    ok = _run([delia, "data", "validate", "builtin:halu/train"], work, env)
    assert "builtin:halu/train: valid" in ok.stdout + ok.stderr
    # the packaged file was unpacked into DELIA_CACHE, as plain JSONL with the task's 100 rows
    cached = list((tmp_path / "cache" / "data").glob("*/halu/train.jsonl"))
    assert len(cached) == 1 and len(cached[0].read_text().splitlines()) == 100

    bad = subprocess.run([delia, "data", "validate", "builtin:halu/nope"], cwd=work, env=env,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    assert "builtin:halu/nope" in bad.stderr + bad.stdout and "halu/train" in bad.stderr + bad.stdout

"""Every command that reads examples, against a corpus of malformed files: exit 2, `FILE:LINE` in the message,
no traceback, nothing written. The commands run in this process through the console entry point (the same
`delia.cli.main` a shell runs); a few run as real subprocesses too."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import delia

from .clirun import run_cli
from .data.malformed import BY_USE, UNIVERSAL, Case
from .mixing.conftest import downstream_rows, write_jsonl


def commands(f: Path, out: Path, tiny: str, good_down: Path) -> dict[str, list[str]]:
    return {
        "validate": ["data", "validate", str(f)],
        "stats": ["data", "stats", str(f), "--model", tiny],
        "build": ["build", "--downstream", str(f), "--out", str(out), "--model", "", "--ratio", "0"],
        "build-diverse": ["build", "--downstream", str(good_down), "--diverse", str(f), "--ratio", "1",
                          "--out", str(out), "--model", ""],
        "train": ["train", "--data", str(f), "--out", str(out), "--model", tiny],
        "eval": ["eval", "--data", str(f), "--out", str(out), "--model", tiny],
        "sample": ["sample", "--queries", str(f), "--out", str(out / "cache.jsonl"), "--model", tiny,
                   "--no-progress"],
    }


def _where(path: Path, case: Case) -> str:
    return f"{path}:{case.line}:" if case.line else f"{path}:"


def _listing(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_corpus_is_large_enough():
    assert len(UNIVERSAL) >= 35 and len({c.name for c in UNIVERSAL + BY_USE}) == len(UNIVERSAL + BY_USE)


def test_every_command_rejects_every_malformed_file_cleanly(tiny_dir, tmp_path):
    good_down = write_jsonl(tmp_path / "good_down.jsonl", downstream_rows(3))
    files = tmp_path / "corpus"
    files.mkdir()
    failures = []
    for case in UNIVERSAL:
        path = case.write(files)
        before = _listing(tmp_path)
        for cmd, args in commands(path, tmp_path / f"out-{case.name}", tiny_dir, good_down).items():
            code, text = run_cli(args)
            problems = []
            if code != 2:
                problems.append(f"exit {code}")
            if _where(path, case) not in text:
                problems.append(f"no {_where(path, case)}")
            if case.reason not in text and cmd != "build-diverse":  # the cache reader reads chat rows only
                problems.append(f"reason {case.reason!r} missing")
            if "Traceback" in text:
                problems.append("traceback")
            if _listing(tmp_path) != before:
                problems.append(f"left {sorted(_listing(tmp_path) - before)}")
            if problems:
                failures.append(f"{case.name} x {cmd}: {', '.join(problems)}\n    {text.strip()[:300]}")
    assert not failures, "\n".join(failures)


def test_use_specific_rows_are_rejected_by_the_commands_that_need_them(tiny_dir, tmp_path):
    good_down = write_jsonl(tmp_path / "good_down.jsonl", downstream_rows(3))
    failures = []
    for case in BY_USE:
        path = case.write(tmp_path)
        code, text = run_cli(["data", "validate", str(path)])
        assert code == 0, text  # well-formed; the listing says which commands take it
        for cmd in case.fails:
            use = {"eval": "eval-halu"}.get(cmd, cmd)
            before = _listing(tmp_path)
            runs = {"validate --for": ["data", "validate", str(path), "--for", use],
                    cmd: commands(path, tmp_path / f"out-{case.name}", tiny_dir, good_down)[cmd]}
            for name, args in runs.items():
                code, text = run_cli(args)
                if code != 2 or _where(path, case) not in text or "Traceback" in text or \
                        _listing(tmp_path) != before:
                    failures.append(f"{case.name} x {name} {cmd}: exit {code}\n    {text.strip()[:300]}")
            if cmd == case.fails[0] and case.reason not in run_cli(runs["validate --for"])[1]:
                failures.append(f"{case.name}: validate --for {use} lacks {case.reason!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("name", ["invalid_utf8", "a_directory", "deep_nesting"])
def test_real_processes_exit_2_without_traceback(tiny_dir, tmp_path, name):
    case = next(c for c in UNIVERSAL if c.name == name)
    path = case.write(tmp_path)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-m", "delia", "train", "--data", str(path), "--out",
                           str(tmp_path / "out"), "--model", tiny_dir], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 2 and _where(path, case) in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "out").exists()

"""Atomic writes: the temporary file of a killed writer is swept on the next write, a live writer's is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from delia.files import write_text_atomic


def test_next_write_removes_only_the_temporary_files_of_dead_processes(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead_pid = int(dead.stdout)
    (tmp_path / f".m.json.tmp{dead_pid}").write_text('{"half')  # a writer SIGKILLed before its rename
    live = tmp_path / f".m.json.tmp{os.getppid()}"  # a running process (pytest's parent) still writing
    live.write_text("{")
    other = tmp_path / f".m.jsonl.tmp{dead_pid}"  # another file's temporary file
    other.write_text("x")
    write_text_atomic(tmp_path / "m.json", "{}\n")
    assert (tmp_path / "m.json").read_text() == "{}\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["m.json", live.name, other.name])

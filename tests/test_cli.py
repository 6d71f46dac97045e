from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from delia.cli import app

runner = CliRunner()


def _commands(help_text: str) -> list[str]:
    block = help_text.split("Commands")[-1]
    return re.findall(r"│ (\w[\w-]*)\s{2,}", block)


def test_help_lists_only_working_commands():
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    cmds = _commands(res.output)
    assert {"data", "ls", "chat", "sample", "diversify", "build", "train", "eval", "experiment", "report"} <= set(cmds)
    for cmd in cmds:  # every listed command answers --help
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0, cmd


def test_validate_exit_codes_and_line_format(shared_data, tmp_path):
    src = shared_data / "halu" / "train.jsonl"
    ok = subprocess.run([sys.executable, "-m", "delia", "data", "validate", str(src)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = src.read_text().splitlines()
    lines[4] = lines[4][:50]  # break line 5
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    bad = subprocess.run([sys.executable, "-m", "delia", "data", "validate", str(broken)],
                         capture_output=True, text=True)
    assert bad.returncode == 2
    assert bad.stdout.strip().splitlines() == [f"{broken}:5: invalid JSON: Unterminated string starting at "
                                               f"(column 41)"] or bad.stdout.startswith(f"{broken}:5: invalid JSON")


def test_stats_json(shared_data):
    res = runner.invoke(app, ["data", "stats", str(shared_data / "halu" / "valid.jsonl"), "--json"])
    assert res.exit_code == 0, res.output
    stats = json.loads(res.output)
    assert stats["rows"] == 11 and stats["roles"] == {"user": 11, "assistant": 11}


def test_ls_lists_formats():
    res = runner.invoke(app, ["ls", "formats"])
    assert res.exit_code == 0 and "halu_test" in res.output and "translation" in res.output


def test_user_errors_are_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "delia", "data", "stats", str(tmp_path / "none.jsonl")],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "error:" in res.stderr and "file not found" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_chat_with_embedded_model():
    res = runner.invoke(app, ["chat", "What is the capital of France?", "--max-new-tokens", "20"])
    assert res.exit_code == 0 and "Paris" in res.output

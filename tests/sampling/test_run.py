"""`delia sample` end to end on the tiny model: counts, resume, SIGKILL, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from delia.config import ConfigError, load_config
from delia.data import read_records
from delia.data.records import DataError
from delia.sampling.run import SampleConfig, run_sample


def _keys(path: Path) -> list[str]:
    return [json.loads(line)["key"] for line in path.read_text().splitlines()]


def _cfg(tiny_dir, queries, out, **kw) -> SampleConfig:
    return SampleConfig(out=str(out), queries=str(queries), model=tiny_dir, max_new_tokens=kw.pop("max_new_tokens", 6),
                        engine_options={"batch_size": 4, "dtype": "fp32"}, **kw)


def test_n_queries_give_n_rows_and_a_rerun_adds_none(tiny_dir, alpaca_file, tmp_path):
    queries, out = alpaca_file(7), tmp_path / "cache.jsonl"
    s1 = run_sample(_cfg(tiny_dir, queries, out), progress=False)
    assert (s1.total, s1.done, s1.skipped, s1.failed) == (7, 7, 0, 0)
    assert s1.truncated + sum(1 for r in read_records(out, fmt="messages") if r.extra["meta"]["finish_reason"]
                              == "stop") == 7
    rows = read_records(out, fmt="messages")
    assert len(rows) == 7 and len(set(_keys(out))) == 7
    assert [r.messages[0]["content"] for r in rows] != []
    assert {r.id for r in rows} == {f"q:{i}" for i in range(1, 8)}
    assert all(r.extra["meta"]["params"] == {"max_new_tokens": 6, "temperature": 0.7, "top_p": 0.95,
                                             "one_shot": True} for r in rows)
    before = out.read_bytes()
    s2 = run_sample(_cfg(tiny_dir, queries, out), progress=False)
    assert (s2.done, s2.skipped) == (0, 7) and out.read_bytes() == before
    # a new seed is a new key: all rows are sampled again, next to the old ones
    s3 = run_sample(_cfg(tiny_dir, queries, out, seed=1, limit=3), progress=False)
    assert (s3.total, s3.done) == (3, 3) and len(set(_keys(out))) == 10


def test_repeated_queries_are_answered_once(tiny_dir, tmp_path):
    q = tmp_path / "dup.jsonl"
    q.write_text('{"query": "same"}\n{"query": "other"}\n{"query": "same"}\n')
    s = run_sample(_cfg(tiny_dir, q, tmp_path / "c.jsonl"), progress=False)
    assert (s.total, s.duplicates, s.done) == (3, 1, 2)


def test_bad_inputs_give_clear_errors_before_loading_a_model(tmp_path, alpaca_file):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=f"{empty}:1: file holds no rows"):
        run_sample(SampleConfig(out=str(tmp_path / "c.jsonl"), queries=str(empty), model="/nonexistent"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"instruction": "ok"}\n{"instruction": 3}\nnot json\n')
    with pytest.raises(DataError) as e:
        run_sample(SampleConfig(out=str(tmp_path / "c.jsonl"), queries=str(bad), model="/nonexistent"))
    assert f"{bad}:2: instruction: expected a string" in str(e.value) and f"{bad}:3: invalid JSON" in str(e.value)
    from delia.models import ModelNotFoundError

    with pytest.raises(ModelNotFoundError, match="nonexistent"):
        run_sample(SampleConfig(out=str(tmp_path / "c.jsonl"), queries=str(alpaca_file(2)), model="/nonexistent"))
    with pytest.raises(ConfigError, match="exactly one of queries"):
        load_config(SampleConfig, overrides=["out=x.jsonl"])
    with pytest.raises(ConfigError, match="did you mean max_new_tokens"):
        load_config(SampleConfig, overrides=["out=x.jsonl", "queries=q", "max_new_token=3"])


def test_sigkill_mid_run_then_resume_gives_exactly_n_unique_rows(tiny_dir, alpaca_file, tmp_path):
    n = 24
    queries, out = alpaca_file(n), tmp_path / "cache.jsonl"
    cmd = [sys.executable, "-m", "delia", "sample", "--model", tiny_dir, "--queries", str(queries), "--out", str(out),
           "--max-new-tokens", "16", "--batch-size", "2", "--dtype", "fp32", "--threads", "1", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_text().count("\n") >= 3:  # a few batches are in
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_with = out.read_text().count("\n")
    assert 3 <= killed_with < n
    resumed = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    summary = json.loads(resumed.stdout)
    keys = _keys(out)
    assert len(keys) == n and len(set(keys)) == n
    assert summary["skipped"] == killed_with and summary["done"] == n - killed_with
    assert len(read_records(out, fmt="messages")) == n


def test_cli_summary_and_yaml_config(tiny_dir, alpaca_file, tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    cfg = tmp_path / "s.yaml"
    cfg.write_text(f"model: {tiny_dir}\nmax_new_tokens: 4\nengine_options:\n  batch_size: 3\n")
    out = tmp_path / "c.jsonl"
    res = CliRunner().invoke(app, ["sample", "-c", str(cfg), "--queries", str(alpaca_file(4)), "--out", str(out),
                                   "--limit", "3", "--json", "--no-progress", "seed=2"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout[res.stdout.index("{"):])
    assert (summary["total"], summary["done"]) == (3, 3)
    assert all(json.loads(line)["meta"]["seed"] == 2 for line in out.read_text().splitlines())

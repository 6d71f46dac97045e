"""`delia sample` on the real embedded model (slow)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_embedded_model_answers_alpaca_queries(shared_data, tmp_path):
    out = tmp_path / "c.jsonl"
    cmd = [sys.executable, "-m", "delia", "sample", "--queries", str(shared_data / "diverse" / "alpaca_5000.jsonl"),
           "--limit", "4", "--out", str(out), "--max-new-tokens", "48", "--json", "--no-progress"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["done"] == 4
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(rows) == 4 and all(r["meta"]["model"].startswith("smollm2-135m-instruct@") for r in rows)
    # a real instruct model answers these short one-shot tasks and ends its turn (the tiny model cannot)
    assert all(r["messages"][1]["content"].strip() for r in rows)
    assert sum(r["meta"]["finish_reason"] == "stop" for r in rows) >= 3

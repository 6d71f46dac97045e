"""The demo preset, shrunk, end to end on the real embedded model (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.experiments import expand
from delia.experiments.cli import load_experiment
from delia.experiments.report import build_report
from delia.experiments.runner import run_experiment

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_demo_preset_shrunk_runs_on_the_embedded_model(tmp_path, monkeypatch, shared_data):
    monkeypatch.chdir(ROOT)
    exp = load_experiment(ROOT / "configs/demo.yaml", [
        # 16 sampled tokens cut most answers: keep them (the exclusion is tested elsewhere)
        f"out={tmp_path / 'demo'}", "grid.ratios=[1]", "sample.max_new_tokens=16", "build.exclude_truncated=false",
        "train.max_steps=1",
        "train.epochs=1", "eval.limit=2", "eval.generation.max_new_tokens=32", "threads=2"])
    out = run_experiment(expand(exp))
    assert not out.failed and not out.blocked, out.failed
    results = json.loads((tmp_path / "demo/results.json").read_text())
    assert {r["method"] for r in results} == {"original", "cit", "delia"}
    assert all(r["metrics"]["unseen.n"] == 2 for r in results)
    assert "## Main results" in build_report(tmp_path / "demo").read_text()

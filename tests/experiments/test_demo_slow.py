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
        "train.epochs=1", "eval.limit=2", "eval.generation.max_new_tokens=32", "drift.queries=2",
        "drift.max_new_tokens=8", "threads=2"])
    out = run_experiment(expand(exp))
    assert not out.failed and not out.blocked, out.failed
    results = json.loads((tmp_path / "demo/results.json").read_text())
    assert {r["method"] for r in results} == {"original", "cit", "cit_steps", "delia"}
    assert all(r["metrics"]["unseen.n"] == 2 for r in results)
    report = build_report(tmp_path / "demo").read_text()
    assert "## Main results" in report and "## Drift from the base model" in report
    # one seed, 2 examples: the verdict says what such a run cannot show and names the larger run
    assert "**What a run this size can show**: 2 test examples, 1 training seed" in report
    assert "A larger run of this comparison: docs/halu100/report.md." in report

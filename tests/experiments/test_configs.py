"""Every shipped experiment config loads, validates and expands into a plan (no model is run)."""

from __future__ import annotations

from pathlib import Path

import pytest

from delia.config import ConfigError
from delia.experiments import expand
from delia.experiments.cli import load_experiment

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.name for p in (ROOT / "configs").glob("*.yaml")
                 if p.read_text().lstrip().startswith("#") and "\ngrid:" in p.read_text())


def test_the_presets_exist():
    assert {"demo.yaml", "cpu_halu.yaml", "paper_halu.yaml", "paper_translation.yaml"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_expands(name, monkeypatch, shared_data):
    monkeypatch.chdir(ROOT)  # configs name packaged data (builtin:...) and repo-relative files
    exp = load_experiment(ROOT / "configs" / name)
    plan = expand(exp)
    assert plan.runs and plan.steps
    assert {r.method for r in plan.runs} == set(exp.grid.methods)


def test_bad_configs_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  methds: [cit]\n")
    with pytest.raises(ConfigError, match="methods"):
        load_experiment(bad)
    bad.write_text("grid:\n  sizes: [0]\n")
    with pytest.raises(ConfigError, match="sizes"):
        load_experiment(bad)
    bad.write_text("train:\n  data: x.jsonl\n")
    with pytest.raises(ConfigError, match="set by the experiment"):
        load_experiment(bad)

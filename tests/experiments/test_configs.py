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


def test_halu100_with_the_controls_added_keeps_every_step_of_the_plain_grid(monkeypatch):
    """The controls the comments of configs/halu100.yaml offer only add steps: the running grid stays valid."""
    monkeypatch.chdir(ROOT)
    plain = expand(load_experiment(ROOT / "configs/halu100.yaml", ["grid.ratios=[3, 10]"]))
    more = expand(load_experiment(ROOT / "configs/halu100.yaml", ["grid.ratios=[3, 10]",
        "grid.methods=[original, cit, delia, cit_steps, delia@input, wo_diversified, wo_all, cit@paper, "
        "delia@paper, cit_steps@paper]",
        "recipes={paper: {learning_rate: 2.0e-4, epochs: 1, warmup_steps: 25, batch_size: null}, "
        "input: {token_side: input}}"]))
    assert {s.key for s in plain.steps} < {s.key for s in more.steps}
    steps = {r.id: r.steps["train"].config for r in more.runs if r.method.startswith("cit_steps")}
    # ratio 3: 400 rows, batch 8, 2 epochs -> 100 steps; ratio 10: 1100 rows -> 276; paper: batch 64, 1 epoch
    assert steps["cit_steps/ratio3-seed1-size100"]["max_steps"] == 100
    assert steps["cit_steps/ratio10-seed1-size100"]["max_steps"] == 276
    assert steps["cit_steps@paper/ratio3-seed1-size100"]["max_steps"] == 7
    assert steps["cit_steps@paper/ratio3-seed1-size100"]["batch_size"] == 64


def test_halu100_token_side_control_trains_the_input_row_at_ratio_3_only(monkeypatch):
    """Issue 15 item 7: `delia@input` is DELIA with `token_side: input`, at ratio 3 (where delia has 3 seeds),
    on the same build steps as `delia`."""
    monkeypatch.chdir(ROOT)
    plan = expand(load_experiment(ROOT / "configs/halu100.yaml"))
    runs = {r.id: r for r in plan.runs if r.method in ("delia", "delia@input")}
    inputs = sorted(i for i in runs if i.startswith("delia@input/"))
    assert inputs == [f"delia@input/ratio3-seed{s}-size100" for s in (1, 2, 3)]
    for i in inputs:
        twin = runs[i.replace("delia@input", "delia")]
        assert runs[i].steps["train"].config["token_side"] == "input"
        assert twin.steps["train"].config.get("token_side") is None
        same = {k: v for k, v in runs[i].steps["train"].config.items() if k != "token_side"}
        assert same == {k: v for k, v in twin.steps["train"].config.items() if k != "token_side"}
        assert runs[i].steps["train"].inputs["data"].key == twin.steps["train"].inputs["data"].key  # same rows

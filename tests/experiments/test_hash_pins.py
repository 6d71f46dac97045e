"""Finished grid steps stay valid: planning the shipped experiment configs gives exactly the step keys recorded
when their steps were run (tests/experiments/data/step_keys.json). A refactor that changes a key would rerun
hours of CPU work; if a change is meant to rerun steps, regenerate the pins and say so in the commit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.config import load_config
from delia.experiments.config import ExperimentConfig
from delia.experiments.plan import expand

ROOT = Path(__file__).resolve().parents[2]
PINS = json.loads((Path(__file__).parent / "data" / "step_keys.json").read_text())


@pytest.mark.parametrize("name", sorted(PINS))
def test_planned_step_keys_are_pinned(name: str) -> None:
    plan = expand(load_config(ExperimentConfig, ROOT / "configs" / f"{name}.yaml"))
    keys = sorted(f"{s.kind}/{s.key}" for s in plan.steps)
    missing, extra = sorted(set(PINS[name]) - set(keys)), sorted(set(keys) - set(PINS[name]))
    assert not missing and not extra, f"{name}: step keys changed: lost {missing[:5]}, new {extra[:5]}"

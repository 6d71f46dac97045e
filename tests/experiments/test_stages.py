"""Step resolution: what goes into a step's hash and what does not."""

from __future__ import annotations

import pytest

from delia.config import ConfigError
from delia.experiments.stages import resolve


def test_resolved_config_has_defaults_placeholders_and_no_volatile_or_unset_fields():
    r = resolve("train", {"model": "m", "seed": 1, "threads": 2}, ["data"])
    assert r["lora_r"] == 16 and r["learning_rate"] == 2e-4  # the stage's defaults are part of the hash
    assert r["data"] == "<data>/train.jsonl" and "out" not in r  # placeholders, not machine paths
    assert "threads" not in r and "report_to" not in r  # volatile
    assert "init_adapter" not in r and "batch_size" not in r  # unset optional fields
    assert resolve("train", {"model": "m", "seed": 1, "init_adapter": None}, ["data"]) == r
    assert resolve("train", {"model": "m", "seed": 2}, ["data"]) != r
    assert "token_side" not in r  # unset (both): existing train steps keep their hash
    side = resolve("train", {"model": "m", "seed": 1, "token_side": "input"}, ["data"])
    assert side["token_side"] == "input" and side != r
    e = resolve("eval", {"data": "x.jsonl", "halu": {"instructions": "seen:1"}}, ["seen"])
    assert e["halu"]["seen_file"] == "<seen>/data.jsonl" and e["halu"]["instructions"] == "seen:1"


def test_a_stage_rejecting_its_config_fails_the_plan():
    with pytest.raises(ConfigError, match="train step: .*lora_r"):
        resolve("train", {"lora_r": 0}, ["data"])


def test_an_experiment_selects_the_token_side_through_train(make_exp):
    """`train: {token_side: input}` reaches every train step (and its hash); unset, the keys are unchanged."""
    from delia.experiments import expand

    plain = [s for s in expand(make_exp()).steps if s.kind == "train"]
    side = [s for s in expand(make_exp(train={"token_side": "input"})).steps if s.kind == "train"]
    assert plain and len(side) == len(plain)
    assert all(s.config["token_side"] == "input" for s in side) and all("token_side" not in s.config for s in plain)
    assert {s.key for s in side}.isdisjoint(s.key for s in plain)

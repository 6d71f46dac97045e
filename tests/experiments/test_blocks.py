"""An experiment's stage blocks are typed at load time, and `token:` sets the special token of every stage."""

from __future__ import annotations

import pytest

from delia.config import ConfigError, from_dict, to_dict
from delia.experiments import ExperimentConfig, expand
from delia.experiments.cli import load_experiment


@pytest.mark.parametrize("block,error", [
    ("train:\n  lerning_rate: 1.0e-3\n", r"unknown config key 'train\.lerning_rate'; did you mean learning_rate\?"),
    ("train:\n  lora_r: many\n", r"train\.lora_r: expected int, got 'many'"),
    ("train:\n  lora_r: 0\n", r"train: lora_r must be >= 1, got 0"),
    ("sample:\n  max_new_token: 64\n", r"'sample\.max_new_token'; did you mean max_new_tokens"),
    ("build:\n  schedul: interleave\n", r"'build\.schedul'; did you mean schedule\?"),
    ("build:\n  schedule: zigzag\n", r"build\.schedule: 'zigzag' is not one of \['shuffle', 'interleave'\]"),
    ("eval:\n  halu:\n    instructons: seen:1\n", r"'eval\.halu\.instructons'; did you mean instructions\?"),
    ("valid_eval:\n  generation: {max_new_tokns: 1}\n", r"'valid_eval\.generation\.max_new_tokns'; did you mean "
                                                        r"max_new_tokens"),
    ("drift:\n  querys: 8\n", r"'drift\.querys'; did you mean queries"),
    ("grid: {methods: [delia@paper]}\nrecipes:\n  paper: {epoch: 1}\n", r"'recipes\.paper\.epoch'; did you mean "
                                                                      r"epochs\?"),
])
def test_a_stage_block_typo_fails_at_load_naming_the_key(tmp_path, block, error):
    path = tmp_path / "exp.yaml"
    path.write_text("name: t\n" + block)
    with pytest.raises(ConfigError, match=error) as e:
        load_experiment(path)  # loading alone: nothing is planned, no model is loaded
    assert str(e.value).startswith(f"{path}: ")


def test_the_blocks_stay_the_fields_the_user_wrote(make_exp):
    """The blocks are checked, not filled: the steps are built from the fields set (so the hashes hold)."""
    exp = make_exp(train={"learning_rate": "1e-3"}, build={"schedule": "interleave"})
    assert exp.train == {"learning_rate": "1e-3"} and exp.build == {"schedule": "interleave"}
    train = next(s for s in expand(exp).steps if s.kind == "train")
    assert train.resolved["learning_rate"] == 1e-3  # typed when the step is resolved, as before


def _tokens(plan) -> dict[str, set]:
    out: dict[str, set] = {"build": set(), "train": set(), "eval": set()}
    for s in plan.steps:
        if s.kind == "build":
            out["build"].add(s.resolved["token"])
        elif s.kind == "train":
            out["train"].add(tuple(s.resolved["special_tokens"]))
        elif s.kind == "eval":
            out["eval"].add(tuple(s.resolved["halu"]["special_tokens"]))
    return out


def test_token_sep_is_todays_plan_step_for_step(make_exp):
    plain = expand(make_exp())
    same = expand(make_exp(token="<sep>"))
    assert [s.key for s in same.steps] == [s.key for s in plain.steps]
    assert _tokens(plain) == {"build": {"<sep>"}, "train": {("<sep>",)}, "eval": {("<sep>",)}}


def test_one_token_sets_build_train_and_eval(make_exp):
    plan = expand(make_exp(token="<fmt>", grid={"methods": ["original", "cit", "delia", "ctg"]}))
    assert _tokens(plan) == {"build": {"<fmt>"}, "train": {("<fmt>",)}, "eval": {("<fmt>",)}}
    ctg = next(s for s in plan.steps if s.kind == "eval" and s.config.get("decoder") == "arithmetic")
    assert ctg.config["hook_options"]["system"].startswith("<fmt> is a response format")
    plain = {s.key for s in expand(make_exp()).steps if s.kind in ("build", "train", "eval")}
    assert plain.isdisjoint(s.key for s in plan.steps)  # every stage that uses the token is a new step
    none = expand(make_exp(token=""))
    assert _tokens(none) == {"build": {""}, "train": {()}, "eval": {()}}


def test_token_round_trips_through_the_saved_config(make_exp):
    exp = make_exp(token="<fmt>", recipes={"paper": {"epochs": 1}}, grid={"methods": ["delia", "delia@paper"]})
    again = from_dict(ExperimentConfig, to_dict(exp))  # what config.yaml holds, loaded again
    assert [s.key for s in expand(again).steps] == [s.key for s in expand(exp).steps]


@pytest.mark.parametrize("over,error", [
    ({"token": "<fmt>", "build": {"token": "<sep>"}}, r"build\.token: '<sep>' disagrees with token: '<fmt>'"),
    ({"token": "<fmt>", "train": {"special_tokens": ["<sep>"]}}, r"train\.special_tokens: \['<sep>'\] disagrees"),
    ({"token": "<fmt>", "eval": {"halu": {"special_tokens": ["<x>"]}}}, r"eval\.halu\.special_tokens: \['<x>'\] "
                                                                        r"disagrees"),
    ({"token": "", "valid_eval": {"halu": {"special_tokens": ["<sep>"]}}}, r"valid_eval\.halu\.special_tokens"),
    ({"token": "<fmt>", "grid": {"methods": ["delia@p"]}, "recipes": {"p": {"special_tokens": []}}},
     r"recipes\.p\.special_tokens: \[\] disagrees"),
    # without `token:`, blocks that set the token one by one must still agree
    ({"build": {"token": "<fmt>"}}, r"train\.special_tokens \['<sep>'\] lacks build\.token '<fmt>'.*token: <fmt>"),
    ({"build": {"token": "<fmt>"}, "train": {"special_tokens": ["<fmt>"]}},
     r"eval\.halu\.special_tokens \['<sep>'\] lacks build\.token '<fmt>'"),
    ({"grid": {"methods": ["delia@p"]}, "recipes": {"p": {"special_tokens": ["<x>"]}}},
     r"recipes\.p\.special_tokens \['<x>'\] lacks build\.token '<sep>'"),
    ({"token": " <fmt>"}, r"token: must not have surrounding spaces"),
])
def test_tokens_that_disagree_are_an_error(make_exp, over, error):
    with pytest.raises(ConfigError, match=error):
        make_exp(**over)


def test_blocks_that_agree_without_token_are_accepted(make_exp):
    exp = make_exp(build={"token": "<fmt>"}, train={"special_tokens": ["<fmt>"]},
                   eval={"halu": {"special_tokens": ["<fmt>"]}}, valid_eval={"halu": {"special_tokens": ["<fmt>"]}})
    assert _tokens(expand(exp)) == _tokens(expand(make_exp(token="<fmt>")))

"""Each method's defining property, read off the plan it expands to (no model runs)."""

from __future__ import annotations

import pytest

from delia.config import ConfigError
from delia.experiments import expand
from delia.methods import METHODS


def runs(plan, method):
    return [r for r in plan.runs if r.method == method]


def only(plan, method):
    (run,) = runs(plan, method)
    return run


def test_every_method_is_registered():
    assert set(METHODS) == {"original", "icl", "cit", "random_init", "mean_init", "fact_based", "dmt", "ctg",
                            "dipmt", "neftune", "delia", "wo_diverse", "wo_diversified", "wo_all", "w_all", "cit_steps",
                            "plain"}


def test_cit_is_delia_at_ratio_zero_and_the_ablations_alias_their_twins(make_exp):
    plan = expand(make_exp(["cit", "delia", "wo_diverse", "w_all"], ratios=[0.0, 2.0]))
    delia0 = next(r for r in runs(plan, "delia") if r.axes["ratio"] == 0)
    assert only(plan, "cit").steps["train"].key == delia0.steps["train"].key
    assert only(plan, "wo_diverse").steps == only(plan, "cit").steps
    for r in runs(plan, "w_all"):
        twin = next(d for d in runs(plan, "delia") if d.axes == r.axes)
        assert r.steps == twin.steps
    build = only(plan, "cit").steps["train"].inputs["data"]
    assert build.config["ratio"] == 0 and "diverse" not in build.inputs  # no diverse data at all
    assert build.config["seed"] == 42 and only(plan, "cit").steps["train"].config["seed"] == 42


def test_wo_diversified_fixes_one_instruction_and_keeps_delias_diverse_rows(make_exp):
    plan = expand(make_exp(["delia", "wo_diversified", "wo_all"]))
    b_delia = only(plan, "delia").steps["train"].inputs["data"]
    b_fixed = only(plan, "wo_diversified").steps["train"].inputs["data"]
    b_all = only(plan, "wo_all").steps["train"].inputs["data"]
    assert b_fixed.config["fixed_instruction"] == "@first" and b_fixed.config["ratio"] == 2.0
    # same slice of self-sampled rows and same seed -> the builder selects the same diverse ids
    assert b_fixed.inputs["diverse"] is b_delia.inputs["diverse"] and b_fixed.config["seed"] == b_delia.config["seed"]
    assert b_fixed.inputs["downstream"] is b_delia.inputs["downstream"]
    assert b_all.config["fixed_instruction"] == "@first" and b_all.config["ratio"] == 0
    assert "fixed_instruction" not in b_delia.config


def test_plain_trains_on_row_ones_instruction_as_written_without_token_checks(make_exp):
    plan = expand(make_exp(["plain", "wo_all"]))
    b_plain = only(plan, "plain").steps["train"].inputs["data"]
    b_all = only(plan, "wo_all").steps["train"].inputs["data"]
    # wo_all with the token checks off: the user's phrasing spells the format out instead of naming <sep>
    assert b_plain.config == {**b_all.config, "token": ""} and b_plain.inputs == b_all.inputs
    assert only(plan, "plain").axes == {"size": 30, "seed": 42}  # no diverse data: the ratio axis is not read


def test_untrained_baselines_vary_along_no_axis_and_init_the_token_as_specified(make_exp):
    plan = expand(make_exp(["original", "random_init", "mean_init"], ratios=[1.0, 2.0], seeds=[1, 2],
                           sizes=[30, 65]))
    for m in ("original", "random_init", "mean_init"):
        run = only(plan, m)  # one run, whatever the grid
        assert run.axes == {} and "train" not in run.steps and "adapter" not in run.steps["test"].inputs
    halu = {m: only(plan, m).steps["test"].config["halu"] for m in ("original", "random_init", "mean_init")}
    assert halu["original"]["token_init"] == "none"
    assert halu["random_init"]["token_init"] == "random" and halu["random_init"]["token_seed"] == 2024
    assert halu["mean_init"]["token_init"] == "mean"
    desc = halu["mean_init"]["token_description"]
    assert "<sep>" not in desc and "'thought'" in desc and "'hallucination'" in desc


def test_neftune_is_cit_plus_embedding_noise(make_exp):
    plan = expand(make_exp(["cit", "neftune"], methods={"neftune": {"alpha": 10}}))
    nef, cit = only(plan, "neftune").steps["train"], only(plan, "cit").steps["train"]
    assert nef.config["trl"] == {"neftune_noise_alpha": 10}
    assert nef.inputs["data"] is cit.inputs["data"] and nef.key != cit.key


def test_fact_based_adds_the_qa_rows_to_the_cit_data(make_exp):
    plan = expand(make_exp(["cit", "fact_based"], methods={"fact_based": {"n_q": 5}}))
    data = only(plan, "fact_based").steps["train"].inputs["data"]
    assert data.kind == "transform" and data.config == {"name": "fact_qa", "n_q": 5, "seed": 42}
    assert data.inputs["data"] is only(plan, "cit").steps["train"].inputs["data"]


def test_methods_missing_a_stage_hook_or_the_task_fail_at_planning_with_the_reason(make_exp):
    with pytest.raises(ConfigError, match="dictionary_hints.*data.task .halu. has none"):
        expand(make_exp(["dipmt"]))
    with pytest.raises(ConfigError, match="neither in grid.methods nor a method"):
        expand(make_exp(["cit"], methods={"dleia": {}}))


def test_unknown_method_suggests_a_close_name(make_exp):
    from delia.registry import RegistryError

    with pytest.raises(RegistryError, match="delia"):
        expand(make_exp(["deliaa"]))


def test_translation_rows_become_chat_rows_before_the_builder(make_exp, shared_data):
    wmt = str(shared_data / "wmt21/newstest2021.en-is.jsonl")
    exp = make_exp(["original", "cit", "delia"], data={"task": "translation", "train": wmt, "test": wmt,
                                                       "test_rows": [500, 520], "valid": None,
                                                       "queries": str(shared_data / "diverse/alpaca_5000.jsonl")})
    plan = expand(exp)
    build = only(plan, "delia").steps["train"].inputs["data"]
    assert build.config["token"] == "" and build.inputs["downstream"].config["name"] == "translation_chat"
    test = only(plan, "original").steps["test"]
    assert test.inputs["examples"].run_config == {"path": wmt, "n": 20, "start": 500}
    assert "path" not in test.inputs["examples"].resolved  # named by content, not path
    with pytest.raises(ConfigError, match="mean_init.*special_token.*data.task .translation. has none"):
        expand(make_exp(["mean_init"], data={"task": "translation", "train": wmt, "test": wmt, "valid": None}))


def test_translation_chat_layout(tmp_path, shared_data):
    from delia.methods.translation import translation_chat

    (tmp_path / "in").mkdir()
    lines = (shared_data / "wmt21/newstest2021.en-is.jsonl").read_text().splitlines()[:2]
    (tmp_path / "in/data.jsonl").write_text("\n".join(lines) + "\n")
    assert translation_chat({"data": tmp_path / "in"}, tmp_path / "out") == {"rows": 2}
    import json

    row = json.loads((tmp_path / "out/data.jsonl").read_text().splitlines()[0])
    src = json.loads(lines[0])
    user = f"\n{src['src']}\n\n\nTranslate the text above into Icelandic."
    assert row["messages"] == [{"role": "user", "content": user}, {"role": "assistant", "content": src["ref"]}]


def test_every_method_is_scored_on_the_same_prompts_with_seen_phrasings_of_the_smallest_size(make_exp):
    exp = make_exp(["original", "cit", "delia"], sizes=[30, 65], eval={})  # default seen set
    plan = expand(exp)
    seen = {r.steps["test"].inputs["seen"].key for r in plan.runs}
    assert len(seen) == 1
    step = only(plan, "original").steps["test"].inputs["seen"]
    assert step.kind == "subset" and step.config["n"] == 30
    assert "valid" not in only(plan, "original").steps  # valid: None in this fixture


def test_prompting_and_decoding_baselines_use_the_eval_hooks(make_exp):
    plan = expand(make_exp(["icl", "ctg"], methods={"icl": {"k": 3}, "ctg": {"lam": 2.0}}, ratios=[1.0, 2.0]))
    icl, ctg = only(plan, "icl"), only(plan, "ctg")
    assert icl.axes == {} and ctg.axes == {}  # untrained: one run each
    cfg = icl.steps["test"].config
    assert cfg["prompt_hook"] == "icl" and cfg["hook_options"]["k"] == 3 and "adapter" not in icl.steps["test"].inputs
    cfg = ctg.steps["test"].config
    assert cfg["decoder"] == "arithmetic" and cfg["hook_options"]["lam"] == 2.0
    assert cfg["hook_options"]["system"].startswith("<sep> is a response format")


def test_dmt_stage_order_and_stage2_mixture(make_exp):
    plan = expand(make_exp(["cit", "dmt"], ratios=[3.0], methods={"dmt": {"k": 1 / 16}}))
    stage2 = only(plan, "dmt").steps["train"]
    stage1 = stage2.inputs["init"]
    # stage 1 is exactly the CIT training (same step): task rows only, before any diverse row
    assert stage1 is only(plan, "cit").steps["train"] and stage1.inputs["data"].config["ratio"] == 0
    mix = stage2.inputs["data"]
    assert mix.kind == "transform" and mix.config == {"name": "dmt_stage2", "k": 1 / 16, "seed": 42}
    assert mix.inputs["data"].config["ratio"] == 3.0  # DELIA's diverse pool at the same ratio
    from delia.experiments.estimate import train_rows

    assert train_rows(mix) == 3 * 30 + max(1, round(30 / 16))

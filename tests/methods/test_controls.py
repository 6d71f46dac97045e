"""Typed method options, training recipes (`METHOD@RECIPE`) and the controls: equal-steps CIT and the
fixed-instruction ablations scored on their own instruction. Read off the plans (no model runs) except where a
real training checks the step count."""

from __future__ import annotations

import json

import pytest

from delia.config import ConfigError
from delia.experiments import expand
from delia.experiments.estimate import train_rows


def runs(plan, method):
    return [r for r in plan.runs if r.method == method]


def only(plan, method):
    (run,) = runs(plan, method)
    return run


# ---------------------------------------------------------------- typed options


def test_a_mistyped_option_is_an_error_that_suggests_the_key(make_exp):
    with pytest.raises(ConfigError, match=r"unknown config key 'methods\.icl\.kk'; did you mean k\?"):
        expand(make_exp(["icl"], methods={"icl": {"kk": 3}}))
    with pytest.raises(ConfigError, match=r"methods\.neftune\.alpha: expected int or float, got 'x'"):
        expand(make_exp(["neftune"], methods={"neftune": {"alpha": "x"}}))
    with pytest.raises(ConfigError, match=r"methods\.fact_based: n_q must be in 1\.\.20, got 50"):
        expand(make_exp(["fact_based"], methods={"fact_based": {"n_q": 50}}))
    with pytest.raises(ConfigError, match=r"methods\.delia\.ratio.*did you mean ratios"):
        expand(make_exp(["delia"], methods={"delia": {"ratio": [3]}}))
    with pytest.raises(ConfigError, match=r"methods\.cit: expected a mapping"):
        make_exp(["cit"], methods={"cit": 3})


def test_options_reach_the_steps_with_the_type_they_were_written_in(make_exp):
    # `alpha: 5` stays an int and `5.0` a float: both spellings name the steps they named before options were typed
    five = only(expand(make_exp(["neftune"], methods={"neftune": {"alpha": 5}})), "neftune").steps["train"]
    five_f = only(expand(make_exp(["neftune"], methods={"neftune": {"alpha": 5.0}})), "neftune").steps["train"]
    default = only(expand(make_exp(["neftune"])), "neftune").steps["train"]
    assert five.config["trl"] == {"neftune_noise_alpha": 5} and type(five.config["trl"]["neftune_noise_alpha"]) is int
    assert five_f.key == default.key != five.key
    plan = expand(make_exp(["icl", "dmt", "ctg"], ratios=[1.0, 3.0],
                           methods={"icl": {"k": 3}, "dmt": {"k": 0.0039, "ratios": [1]}, "ctg": {"lam": 2}}))
    assert only(plan, "icl").steps["test"].config["hook_options"]["k"] == 3
    assert [r.axes["ratio"] for r in runs(plan, "dmt")] == [1.0]  # the axis restriction stays an option
    assert only(plan, "dmt").steps["train"].inputs["data"].config["k"] == 0.0039
    assert only(plan, "dmt").options == {"ratios": [1.0], "k": 0.0039}


def test_ls_methods_lists_the_controls_with_their_options():
    from typer.testing import CliRunner

    from delia.cli import app

    res = CliRunner().invoke(app, ["ls", "methods"], env={"COLUMNS": "250"})
    assert res.exit_code == 0, res.output
    text = " ".join(res.output.split())
    assert "cit_steps" in text and "as many optimizer steps" in text
    assert "options: k=2" in text and "options: alpha=5" in text and "options: n_q=10" in text


def test_the_cli_names_the_config_file_and_the_right_key(tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    cfg = tmp_path / "x.yaml"
    cfg.write_text(f"out: {tmp_path / 'o'}\ngrid: {{methods: [icl]}}\nmethods: {{icl: {{kk: 3}}}}\n")
    res = CliRunner().invoke(app, ["experiment", str(cfg), "--dry-run"])
    assert res.exit_code != 0 and "x.yaml: unknown config key 'methods.icl.kk'; did you mean k?" in str(res.exception)


# ---------------------------------------------------------------- equal optimizer steps


def test_cit_steps_trains_the_cit_data_for_delias_optimizer_steps(make_exp):
    train = {"batch_size": 8, "epochs": 2}
    plan = expand(make_exp(["cit", "delia", "cit_steps"], ratios=[2.0, 3.0], train=train))
    for run in runs(plan, "cit_steps"):
        ratio = run.axes["ratio"]
        step = run.steps["train"]
        delia = next(r for r in runs(plan, "delia") if r.axes == run.axes).steps["train"]
        rows = train_rows(delia.inputs["data"])
        assert rows == 30 + int(30 * ratio)
        assert step.config["max_steps"] == -(-rows // 8) * 2 and step.config["batch_size"] == 8  # 24 / 30 steps
        # CIT's data (the same build step), only the step budget differs
        assert step.inputs["data"] is only(plan, "cit").steps["train"].inputs["data"]
        assert {k: v for k, v in step.config.items() if k != "max_steps"} == only(plan, "cit").steps["train"].config
    assert sorted(r.id for r in runs(plan, "cit_steps")) == ["cit_steps/ratio2-seed42-size30",
                                                              "cit_steps/ratio3-seed42-size30"]


def test_cit_steps_takes_delias_batch_under_the_default_rule_and_is_cit_at_ratio_zero(make_exp):
    plan = expand(make_exp(["cit", "cit_steps"], sizes=[100], ratios=[0.0, 3.0]))
    r3 = next(r for r in runs(plan, "cit_steps") if r.axes["ratio"] == 3.0).steps["train"]
    # DELIA: 400 rows -> batch 64 (the paper's rule) -> ceil(400 / 64) = 7 steps in 1 epoch; CIT alone would use 16
    assert r3.config["max_steps"] == 7 and r3.config["batch_size"] == 64
    r0 = next(r for r in runs(plan, "cit_steps") if r.axes["ratio"] == 0.0)
    assert r0.steps == only(plan, "cit").steps  # no diverse rows: DELIA is CIT, and so is its control


def test_the_ratios_row_count_is_the_builders_in_plan_and_estimate(make_exp):
    from delia.mixing import diverse_count

    # float floor gave 28 for 0.29 x 100; the builder takes 29
    plan = expand(make_exp(["delia", "cit_steps"], sizes=[100], ratios=[0.29], train={"batch_size": 8}))
    build = only(plan, "delia").steps["train"].inputs["data"]
    assert diverse_count(0.29, 100) == (29, True)
    assert train_rows(build) == 129 and build.inputs["diverse"].volatile["need"] == 29
    assert only(plan, "cit_steps").steps["train"].config["max_steps"] == 17  # ceil(129 / 8) x 1 epoch


def test_the_trainer_takes_the_steps_optimizer_steps_counts(tmp_path, tiny_dir, shared_data):
    """The count cit_steps gives CIT is the count a run over DELIA's rows really takes (and max_steps holds it)."""
    from delia.training import TrainConfig, run_train
    from delia.training.config import optimizer_steps

    lines = (shared_data / "halu/train.jsonl").read_text().splitlines()
    (tmp_path / "big.jsonl").write_text("\n".join(lines[:10]) + "\n")
    (tmp_path / "small.jsonl").write_text("\n".join(lines[:3]) + "\n")
    common = {"model": tiny_dir, "batch_size": 4, "micro_batch_size": 2, "epochs": 2, "report_to": ["none"],
              "warmup_steps": 0, "threads": 1, "max_length": 640}  # no row dropped or cut
    big = TrainConfig(data=str(tmp_path / "big.jsonl"), out=str(tmp_path / "big"), **common)
    assert optimizer_steps(big, 10) == 6  # ceil(10 / 4) x 2
    assert run_train(big).global_step == 6
    small = TrainConfig(data=str(tmp_path / "small.jsonl"), out=str(tmp_path / "small"), max_steps=6, **common)
    assert run_train(small).global_step == 6  # 3 rows repeated over 6 steps of 4, epochs ignored


# ---------------------------------------------------------------- training recipes


def _recipes():
    return {"paper": {"learning_rate": 2.0e-4, "epochs": 1, "warmup_steps": 25, "batch_size": None}}


def test_a_recipe_variant_trains_with_its_overrides_and_plain_names_keep_their_keys(make_exp):
    train = {"learning_rate": 1e-3, "batch_size": 8, "epochs": 2, "warmup_steps": 0}
    plain = expand(make_exp(["cit", "delia"], train=train))
    plan = expand(make_exp(["cit", "delia", "delia@paper", "cit_steps@paper"], train=train, recipes=_recipes()))
    for m in ("cit", "delia"):  # a recipe in the config changes nothing for the plain names
        assert {n: s.key for n, s in only(plan, m).steps.items()} == {n: s.key for n, s in only(plain, m).steps.items()}
    var, base = only(plan, "delia@paper").steps["train"], only(plan, "delia").steps["train"]
    assert var.config["learning_rate"] == 2e-4 and var.config["epochs"] == 1 and var.config["warmup_steps"] == 25
    assert "batch_size" not in var.resolved and base.config["batch_size"] == 8  # null: the default rule again
    assert var.inputs["data"] is base.inputs["data"] and var.key != base.key
    # a variant is the very step that writing the recipe into `train:` makes
    written = expand(make_exp(["delia"], train={"learning_rate": 2.0e-4, "epochs": 1, "warmup_steps": 25}))
    assert only(written, "delia").steps["train"].key == var.key
    assert only(plan, "delia@paper").id == "delia@paper/ratio2-seed42-size30"
    # the equal-steps control of the variant counts the variant's steps: 90 rows, batch 16, 1 epoch -> 6
    steps = only(plan, "cit_steps@paper").steps["train"]
    assert steps.config["max_steps"] == 6 and steps.config["batch_size"] == 16 and steps.config["learning_rate"] == 2e-4


def test_recipe_errors_name_the_recipe_and_the_right_key(make_exp):
    with pytest.raises(ConfigError, match=r"no recipe 'papr' under `recipes:`; did you mean 'paper'\?"):
        make_exp(["delia@papr"], recipes=_recipes())
    with pytest.raises(ConfigError, match=r"recipes\.paper\.lerning_rate'; did you mean learning_rate\?"):
        expand(make_exp(["delia@paper"], recipes={"paper": {"lerning_rate": 1.0}}))
    with pytest.raises(ConfigError, match=r"recipes\.paper: \['data'\] are set by the experiment"):
        make_exp(["delia@paper"], recipes={"paper": {"data": "x"}})
    with pytest.raises(ConfigError, match="names no method"):
        make_exp(["@paper"], recipes=_recipes())
    with pytest.raises(ConfigError, match=r"options for 'delia@papr', which is neither in grid.methods nor a method "
                                          r"\(with its recipe\); did you mean 'delia@paper'\?"):
        make_exp(["delia@paper"], recipes=_recipes(), methods={"delia@papr": {}})
    # a grid narrowed on the command line keeps the options of the methods it no longer runs, idle
    plan = expand(make_exp(["delia@paper"], recipes=_recipes(), methods={"cit": {"seeds": [1]}}))
    assert {r.method for r in plan.runs} == {"delia@paper"}
    # options of the base name apply to its variants, a variant's own on top
    plan = expand(make_exp(["neftune@paper"], recipes=_recipes(), methods={"neftune": {"alpha": 7},
                                                                           "neftune@paper": {"seeds": [1]}}))
    run = only(plan, "neftune@paper")
    assert run.steps["train"].config["trl"] == {"neftune_noise_alpha": 7} and run.axes["seed"] == 1


# ---------------------------------------------------------------- fixed-instruction ablations


def test_fixed_instruction_ablations_are_scored_seen_on_the_instruction_they_trained_on(make_exp, tmp_path):
    from delia.evaluation.instructions import seen_instructions
    from delia.experiments.stages import run_step

    plan = expand(make_exp(["delia", "wo_diversified", "wo_all"], eval={}))
    seen = {m: only(plan, m).steps["test"].inputs["seen"] for m in ("delia", "wo_diversified", "wo_all")}
    assert seen["wo_all"] is seen["wo_diversified"] and seen["wo_all"].config == {"n": 1}
    assert seen["delia"].config == {"n": 30}  # the others keep the shared seen phrasings
    # run the seen subset and the fixed-instruction build for real: the one seen phrasing is the trained one
    build = only(plan, "wo_all").steps["train"].inputs["data"]
    dirs = {}
    for step in (seen["wo_all"], build.inputs["downstream"]):
        dirs[step.key] = d = tmp_path / step.kind / step.key
        d.mkdir(parents=True)
        run_step(step.kind, step.run_config, {}, d)
    out = tmp_path / "build"
    out.mkdir()
    run_step("build", {**build.run_config, "model": ""}, {"downstream": dirs[build.inputs["downstream"].key]}, out)
    trained = {json.loads(ln)["messages"][0]["content"].rsplit("\n\n\n", 1)[1]
               for ln in (out / "train.jsonl").read_text().splitlines()}
    assert len(trained) == 1
    assert seen_instructions(dirs[seen["wo_all"].key] / "data.jsonl") == sorted(trained)

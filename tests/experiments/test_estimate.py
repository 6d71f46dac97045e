"""--dry-run estimates: exact work counts times the cost model."""

from __future__ import annotations

import pytest

from delia.experiments import expand
from delia.experiments.estimate import estimate, eval_rows, train_rows


def test_work_counts_and_seconds(make_exp):
    exp = make_exp(grid={"methods": ["original", "cit", "delia", "fact_based"], "ratios": [3.0]},
                   methods={"fact_based": {"n_q": 5}}, sample={"max_new_tokens": 100},
                   cost={"sample_token": 0.01, "train_row": 2.0, "train_diverse_row": 1.28, "eval_token": 0.001,
                         "score_row": 0.5, "model_load": 1.0, "hook_factor": {}})
    plan = expand(exp)
    by = {r.method: r for r in plan.runs}
    assert train_rows(by["cit"].steps["train"].inputs["data"]) == 30
    assert train_rows(by["delia"].steps["train"].inputs["data"]) == 30 + 90
    assert train_rows(by["fact_based"].steps["train"].inputs["data"]) == 30 + 8 * 5
    assert eval_rows(by["delia"].steps["test"]) == 4 * 2  # limit 4 x (seen:1 + unseen:1)
    assert eval_rows(by["delia"].steps["valid"]) == 11  # every gold row under its own instruction
    est = estimate(plan)
    sample = next(s for s in plan.steps if s.kind == "sample")
    assert sample.volatile["limit"] == 90 + 5 + 2
    assert est.per_step[sample.key] == pytest.approx(1.0 + 97 * 100 * 0.01)
    # 30 downstream rows x 2.0 s + 90 diverse rows x 1.28 s scaled by 100 / 128 sampled tokens
    assert est.per_step[by["delia"].steps["train"].key] == pytest.approx(1.0 + 30 * 2.0 + 90 * 1.0)
    assert est.per_step[by["cit"].steps["train"].key] == pytest.approx(1.0 + 30 * 2.0)
    assert est.per_step[by["delia"].steps["test"].key] == pytest.approx(1.0 + 8 * 256 * 0.001)
    assert est.per_step[by["delia"].steps["valid"].key] == pytest.approx(1.0 + 11 * 0.5)
    assert est.n_todo == len(plan.steps)
    exp2 = make_exp(grid={"methods": ["ctg"]}, cost={"eval_token": 0.001, "model_load": 0.0,
                                                      "hook_factor": {"arithmetic": 5.0}})
    (run,) = expand(exp2).runs
    assert estimate(expand(exp2)).per_step[run.steps["test"].key] == pytest.approx(8 * 256 * 0.001 * 5.0)


def test_a_step_budget_is_charged_by_its_steps_not_its_epochs(make_exp):
    # cit_steps: 30 CIT rows trained for DELIA's ceil(120 / 8) x 2 = 30 steps of 8 = 240 row passes (8 epochs)
    exp = make_exp(grid={"methods": ["cit", "cit_steps"], "ratios": [3.0]}, train={"batch_size": 8, "epochs": 2},
                   cost={"train_row": 2.0, "model_load": 1.0})
    plan = expand(exp)
    by = {r.method: r for r in plan.runs}
    est = estimate(plan)
    assert by["cit_steps"].steps["train"].config["max_steps"] == 30
    assert est.per_step[by["cit_steps"].steps["train"].key] == pytest.approx(1.0 + 240 * 2.0)
    assert est.per_step[by["cit"].steps["train"].key] == pytest.approx(1.0 + 60 * 2.0)


def test_plan_estimate_and_build_agree_on_the_ratios_row_count(make_exp, tmp_path):
    """R = 0.29 with 100 rows: 29 diverse rows everywhere (a float floor gave 28 in the plan and 29 in the build)."""
    import json

    from delia.experiments.estimate import diverse_rows
    from delia.experiments.stages import run_step

    plan = expand(make_exp(grid={"methods": ["delia"], "sizes": [100], "ratios": [0.29]}))
    build = next(s for s in plan.steps if s.kind == "build")
    assert build.inputs["diverse"].volatile["need"] == 29  # what the plan samples for
    assert diverse_rows(build) == 29 and train_rows(build) == 129  # what the estimate charges
    # the real build on the planned config: the downstream subset, and 40 answered queries standing in for the slice
    down, cache, out = tmp_path / "down", tmp_path / "slice", tmp_path / "build"
    for d in (down, cache, out):
        d.mkdir()
    run_step("subset", build.inputs["downstream"].run_config, {}, down)
    (cache / "cache.jsonl").write_text("".join(json.dumps(
        {"id": f"q{i}", "key": f"{i:064x}", "messages": [{"role": "user", "content": f"query {i}"},
                                                         {"role": "assistant", "content": f"answer {i}"}],
         "meta": {"model": "m", "finish_reason": "stop", "n_new_tokens": 3}}) + "\n" for i in range(40)))
    config = {**build.run_config, "model": ""}  # '' skips the tokenizer check, which counts nothing
    counts = run_step("build", config, {"downstream": down, "diverse": cache}, out)["counts"]
    rows = [json.loads(ln) for ln in (out / "train.jsonl").read_text().splitlines()]
    assert sum(r["source"] != "downstream" for r in rows) == 29 and len(rows) == 129
    assert counts["diverse"] == 29


def test_evaluations_are_sized_by_the_replies_of_finished_ones(make_exp, tmp_path):
    # before any evaluation finished, each prompt is charged the full budget; once one tuned evaluation finished
    # (30 new tokens per reply), the other tuned ones are charged that; the base keeps the budget until its own
    # evaluation has finished
    import json

    exp = make_exp(grid={"methods": ["original", "cit", "delia"], "ratios": [3.0]}, out=str(tmp_path / "exp"),
                   eval={"generation": {"max_new_tokens": 200}},
                   cost={"eval_token": 0.01, "model_load": 0.0, "hook_factor": {}})
    plan = expand(exp)
    by = {r.method: r for r in plan.runs}
    before = estimate(plan)
    assert before.reply_tokens == {}
    assert before.per_step[by["delia"].steps["test"].key] == pytest.approx(8 * 200 * 0.01)
    d = by["cit"].steps["test"].dir(tmp_path / "exp")
    d.mkdir(parents=True)
    d.joinpath("done.json").write_text(json.dumps({"summary": {"speed": {"rows_generated": 8, "new_tokens": 240}}}))
    after = estimate(plan)
    assert after.reply_tokens == {True: 30.0}
    assert after.per_step[by["delia"].steps["test"].key] == pytest.approx(8 * 30 * 0.01)
    assert after.per_step[by["original"].steps["test"].key] == pytest.approx(8 * 200 * 0.01)
    # a finished step that recorded no speed (an older step) is skipped, not a crash
    d2 = by["original"].steps["test"].dir(tmp_path / "exp")
    d2.mkdir(parents=True)
    d2.joinpath("done.json").write_text(json.dumps({"seconds": 3.0}))
    assert estimate(plan).reply_tokens == {True: 30.0}


def test_remaining_steps_are_rescaled_by_what_finished_ones_of_their_kind_took(make_exp, tmp_path):
    # the cost model says 60 s per CIT training; one CIT seed finished in 150 s (2.5x the model): the other seeds and
    # DELIA's training are charged 2.5x their modelled time; evaluations keep the model until one of them finishes
    import json

    exp = make_exp(grid={"methods": ["cit", "delia"], "ratios": [3.0], "seeds": [1, 2]}, out=str(tmp_path / "exp"),
                   cost={"train_row": 2.0, "train_diverse_row": 1.28, "eval_token": 0.01, "model_load": 0.0,
                         "hook_factor": {}}, sample={"max_new_tokens": 128})
    plan = expand(exp)
    trains = {(r.method, r.axes["seed"]): r.steps["train"] for r in plan.runs}
    before = estimate(plan)
    assert before.scale == {}
    modelled = {k: before.per_step[s.key] for k, s in trains.items()}
    assert modelled[("cit", 1)] == pytest.approx(30 * 2.0)
    d = trains[("cit", 1)].dir(tmp_path / "exp")
    d.mkdir(parents=True)
    d.joinpath("done.json").write_text(json.dumps({"seconds": 150.0}))
    after = estimate(plan)
    assert after.scale == {"train": (pytest.approx(2.5), 1)}
    assert after.done[trains[("cit", 1)].key]
    for k in [("cit", 2), ("delia", 1), ("delia", 2)]:
        assert after.per_step[trains[k].key] == pytest.approx(2.5 * modelled[k])
    test = next(r for r in plan.runs if r.method == "delia").steps["test"]
    assert after.per_step[test.key] == pytest.approx(before.per_step[test.key])
    assert after.total == pytest.approx(before.total - modelled[("cit", 1)]
                                        + 1.5 * sum(v for k, v in modelled.items() if k != ("cit", 1)))
    # a finished step that recorded no time (an older step) does not count
    d.joinpath("done.json").write_text(json.dumps({"summary": {}}))
    assert estimate(plan).scale == {}


def test_a_resumed_sample_is_charged_by_its_cached_answers_length(make_exp, tmp_path):
    # one-shot answers stop long before the budget (halu100: 81 new tokens of 256); once the cache holds
    # MIN_CACHED answers, the remaining queries are charged their mean length, not the budget
    import json

    from delia.experiments.estimate import MIN_CACHED

    exp = make_exp(grid={"methods": ["delia"], "ratios": [3.0]}, out=str(tmp_path / "exp"),
                   sample={"max_new_tokens": 100}, cost={"sample_token": 0.01, "model_load": 1.0})
    plan = expand(exp)
    sample = next(s for s in plan.steps if s.kind == "sample")
    limit = sample.volatile["limit"]
    d = sample.dir(tmp_path / "exp")
    d.mkdir(parents=True)

    def cache(n: int) -> None:
        d.joinpath("cache.jsonl").write_text("".join(json.dumps(
            {"id": f"q{i}", "meta": {"finish_reason": "stop", "n_new_tokens": 20 + 10 * (i % 2)}}) + "\n"
            for i in range(n)))

    cache(MIN_CACHED - 1)  # too few to trust: the budget
    est = estimate(plan)
    assert est.per_step[sample.key] == pytest.approx(1.0 + (limit - MIN_CACHED + 1) * 100 * 0.01)
    assert est.answer_tokens == {}
    cache(MIN_CACHED)
    est = estimate(plan)
    assert est.answer_tokens == {sample.key: pytest.approx(25.0)}
    assert est.per_step[sample.key] == pytest.approx(1.0 + (limit - MIN_CACHED) * 25.0 * 0.01)


def test_delia_run_steps_are_charged_by_row_length_early_stop_and_gold_replies(tmp_path):
    import math

    import yaml

    from delia.config import from_dict
    from delia.experiments.config import ExperimentConfig
    from delia.experiments.estimate import gold_tokens, row_tokens
    from delia.experiments.taskrun import compile_task
    from delia.experiments.usertask import load_task

    compile_task(load_task("builtin:langid", [f"out={tmp_path / 'run'}"]))
    raw = yaml.safe_load((tmp_path / "run" / "experiment.yaml").read_text())
    raw["cost"] = {"train_row": 2.0, "row_tokens": 320.0, "early_stop": 0.5, "eval_token": 0.01, "model_load": 0.0,
                   "hook_factor": {}}
    plan = expand(from_dict(ExperimentConfig, raw))
    by = {r.method: r for r in plan.runs}
    est = estimate(plan)
    train = by["cit"].steps["train"]
    tokens = row_tokens(train.inputs["data"])
    assert 60 < tokens < 140  # a news sentence, the instruction, a one-key JSON reply and the chat template
    # 30 rows x 2.0 s scaled by their length, for half of the 10-epoch budget (validated: early stopping)
    epochs = train.config["epochs"]
    assert epochs == 10 and est.per_step[train.key] == pytest.approx(30 * 2.0 * tokens / 320 * epochs * 0.5)
    # a tuned model's test replies are charged the gold reply's length (a one-key JSON object), not the budget
    test = by["cit"].steps["test"]
    gold = gold_tokens(test)
    assert 4 < gold < 12
    n = eval_rows(test)
    assert est.per_step[test.key] == pytest.approx(n * (math.ceil(gold) + 2) * 0.01)
    assert est.per_step[by["original"].steps["test"].key] == pytest.approx(n * 32 * 0.01)  # the base: the budget
    # without row_tokens and validation the old rule holds: every row costs train_row, every epoch is charged
    raw["cost"] = {"train_row": 2.0, "model_load": 0.0}
    del raw["train"]["validation"]
    plan = expand(from_dict(ExperimentConfig, raw))
    train = next(r for r in plan.runs if r.method == "cit").steps["train"]
    assert estimate(plan).per_step[train.key] == pytest.approx(30 * 2.0 * epochs)

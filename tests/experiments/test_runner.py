"""The grid runner: hashed step directories, skip-if-done, resume after a failure, only affected stages rerun."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from delia.experiments import expand
from delia.experiments.runner import run_experiment


def test_first_run_runs_each_distinct_step_once_and_writes_results(make_exp, fake_stages):
    exp = make_exp(grid={"methods": ["original", "cit", "delia", "wo_diverse", "w_all"], "seeds": [42, 43]})
    plan = expand(exp)
    out = run_experiment(plan)
    assert not out.failed and not out.blocked
    # one shared sample; builds: ratio 0 and ratio 2 per seed; trains/evals: cit + delia per seed (+ the base)
    assert fake_stages.calls == {"sample": 1, "build": 4, "train": 4, "eval": 2 * (4 + 1)}
    root = Path(exp.out_dir)
    results = json.loads((root / "results.json").read_text())
    # original uses no grid axis: one run; the others one per seed; the ablations alias their twins
    assert sorted(r["run"] for r in results) == sorted(
        ["original/base"] + [f"{m}/ratio2-seed{s}-size30" for m in ("delia", "w_all") for s in (42, 43)]
        + [f"{m}/seed{s}-size30" for m in ("cit", "wo_diverse") for s in (42, 43)])
    by = {r["run"]: r for r in results}
    assert by["w_all/ratio2-seed42-size30"]["steps"] == by["delia/ratio2-seed42-size30"]["steps"]
    assert by["cit/seed42-size30"]["metrics"]["train.loss"] == 1 / 30
    assert by["delia/ratio2-seed42-size30"]["metrics"]["train.loss"] == 1 / 90
    header = (root / "results.csv").read_text().splitlines()[0].split(",")
    assert header[:5] == ["run", "method", "size", "ratio", "seed"] and "seen.format_accuracy" in header
    # recomputed from predictions.jsonl: the headline, the floor, failure and finish reasons, budget hits
    m = by["cit/seed42-size30"]["metrics"]
    assert (m["unseen.task_valid"], m["unseen.label_accuracy"], m["unseen.majority_class"]) == (0.5, 0.5, 0.7)
    assert (m["unseen.failure.ok"], m["unseen.failure.cut_at_budget"]) == (5, 5)
    assert (m["unseen.finish.stop"], m["unseen.finish.length"], m["unseen.budget_hit_rate"]) == (5, 5, 0.5)
    assert {"unseen.task_valid", "unseen.failure.cut_at_budget", "unseen.finish.length", "unseen.budget_hit_rate",
            "unseen.label_macro_f1", "seen.task_valid.phrasing_min", "test.max_new_tokens"} <= set(header)
    run_dir = root / "runs/delia/ratio2-seed42-size30"
    cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert cfg["git"]["sha"] and cfg["steps"]["train"]["config"]["seed"] == 42
    assert json.loads((run_dir / "metrics.json").read_text())["method"] == "delia"
    for kind, d in fake_stages.log:
        assert d.parent.name == kind and (d / "done.json").exists() and (d / "step.yaml").exists()


def test_rerun_skips_everything(make_exp, fake_stages):
    exp = make_exp()
    run_experiment(expand(exp))
    fake_stages.calls.clear()
    out = run_experiment(expand(exp))
    assert sum(fake_stages.calls.values()) == 0 and not out.ran and out.results


def test_a_config_change_reruns_only_the_affected_stages(make_exp, fake_stages):
    run_experiment(expand(make_exp()))
    fake_stages.calls.clear()
    run_experiment(expand(make_exp(train={"learning_rate": 1e-4})))  # training changed: train + eval only
    assert fake_stages.calls == {"train": 2, "eval": 4}
    fake_stages.calls.clear()
    run_experiment(expand(make_exp(train={"learning_rate": 1e-4}, eval={"limit": 3})))  # test eval only
    assert fake_stages.calls == {"eval": 3}
    fake_stages.calls.clear()
    # volatile fields (threads, batch size) do not name the output: nothing reruns
    run_experiment(expand(make_exp(train={"learning_rate": 1e-4, "threads": 1}, eval={"limit": 3, "threads": 1})))
    assert sum(fake_stages.calls.values()) == 0


def test_a_larger_ratio_extends_the_sample_cache_and_keeps_old_builds(make_exp, fake_stages):
    run_experiment(expand(make_exp()))
    fake_stages.calls.clear()
    plan = expand(make_exp(grid={"methods": ["delia"], "ratios": [2.0, 4.0]}))
    run_experiment(plan)
    # the cache grows (sample reruns with a larger limit); only the new ratio builds, trains and evaluates
    assert fake_stages.calls == {"sample": 1, "build": 1, "train": 1, "eval": 2}
    sample = next(s for s in plan.steps if s.kind == "sample")
    assert sample.volatile["limit"] == 120 + 6 + 2


def test_a_failure_blocks_only_its_dependents_and_the_next_run_resumes(make_exp, fake_stages):
    exp = make_exp()
    fake_stages.fail_on = {"train"}
    out = run_experiment(expand(exp))
    assert len(out.failed) == 2 and all(k.startswith("train/") for k in out.failed)
    assert len(out.blocked) == 4  # the two evaluations of each failed training
    assert [r["method"] for r in out.results] == ["original"]  # the base model's run still finished
    failed_dir = Path(exp.out_dir) / "steps" / next(iter(out.failed))
    assert "fake train failure" in (failed_dir / "error.txt").read_text()
    fake_stages.fail_on = set()
    fake_stages.calls.clear()
    out = run_experiment(expand(exp))
    assert fake_stages.calls == {"train": 2, "eval": 4} and len(out.results) == 3
    assert not (failed_dir / "error.txt").exists()


def test_an_interrupted_grid_resumes_where_it_stopped(make_exp, fake_stages, monkeypatch):
    import pytest

    from delia.experiments import stages

    exp = make_exp()
    real_train = stages.RUNNERS["train"]
    calls = {"n": 0}

    def interrupted(config, inputs, out):
        calls["n"] += 1
        if calls["n"] == 2:  # Ctrl-C during the second training
            raise KeyboardInterrupt
        return real_train(config, inputs, out)

    monkeypatch.setitem(stages.RUNNERS, "train", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(expand(exp))
    done_before = dict(fake_stages.calls)
    monkeypatch.setitem(stages.RUNNERS, "train", real_train)
    fake_stages.calls.clear()
    out = run_experiment(expand(exp))
    # only the interrupted training and what follows it run again; the first training is not repeated
    assert fake_stages.calls["train"] == 1 and fake_stages.calls["sample"] == 0
    assert done_before["train"] == 1 and len(out.results) == 3


def test_results_name_the_recipe_variant(make_exp, fake_stages):
    recipes = {"paper": {"learning_rate": 2.0e-4, "epochs": 1, "warmup_steps": 25, "batch_size": None}}
    exp = make_exp(grid={"methods": ["cit", "cit@paper"]}, recipes=recipes,
                   train={"learning_rate": 1e-3, "batch_size": 8, "epochs": 2, "warmup_steps": 0})
    out = run_experiment(expand(exp))
    assert not out.failed and sorted(r["method"] for r in out.results) == ["cit", "cit@paper"]
    root = Path(exp.out_dir)
    assert ",cit@paper," in (root / "results.csv").read_text()
    cfg = yaml.safe_load((root / "runs/cit@paper/seed42-size30/config.yaml").read_text())
    assert cfg["method"] == "cit@paper" and cfg["train_recipe"] == recipes["paper"]
    assert cfg["steps"]["train"]["config"]["learning_rate"] == 2e-4
    assert fake_stages.calls["train"] == 2 and fake_stages.calls["build"] == 1  # one build, two recipes

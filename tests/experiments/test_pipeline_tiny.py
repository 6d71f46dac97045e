"""The real stages through the experiment adapters, on the tiny model: sample -> build -> train -> eval."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from delia.experiments import expand
from delia.experiments.runner import run_experiment


def test_tiny_grid_runs_end_to_end_and_a_rerun_does_nothing(make_exp, tiny_dir, shared_data):
    exp = make_exp(model=tiny_dir, threads=1,
                   grid={"methods": ["original", "icl", "ctg", "cit", "delia"], "sizes": [4], "ratios": [1.0],
                         "seeds": [42]},
                   sample={"max_new_tokens": 4, "engine_options": {"batch_size": 8}},
                   build={"exclude_truncated": False},  # the random tiny model never ends an answer in 4 tokens
                   train={"max_steps": 1, "batch_size": 4, "report_to": ["none"]},
                   eval={"limit": 2, "generation": {"max_new_tokens": 4}, "bootstrap": 10,
                         # no seen_file: the experiment supplies the smallest training subset's phrasings
                         "halu": {"instructions": "seen:1,unseen:1",
                                  "unseen_file": str(shared_data / "halu/instructions_unseen.txt")}},
                   valid_eval={"limit": 2})
    plan = expand(exp)
    out = run_experiment(plan)
    assert not out.failed and not out.blocked, out.failed
    assert sorted(s.split("/")[0] for s in out.ran) == sorted(
        ["sample", "slice", "subset", "build", "build", "train", "train"] + ["eval"] * 10)
    root = Path(exp.out_dir)
    results = {r["method"]: r for r in json.loads((root / "results.json").read_text())}
    assert set(results) == {"original", "icl", "ctg", "cit", "delia"}
    icl_prompt = json.loads((root / results["icl"]["steps"]["test"] / "predictions.jsonl").read_text().splitlines()[0])
    assert icl_prompt["example_id"] and results["ctg"]["metrics"]["seen.n"] == 2
    m = results["delia"]["metrics"]
    assert m["train.rows"] == 8 and m["seen.n"] == 2 and m["valid.loss"] > 0 and "l2.json.middle" in m
    manifest = json.loads((root / results["delia"]["steps"]["train"]).joinpath("delia_run.json").read_text())
    assert manifest["data"]["rows"] == 8
    test_cfg = yaml.safe_load((root / results["delia"]["steps"]["test"] / "config.yaml").read_text())
    assert test_cfg["halu"]["seen_file"].endswith("data.jsonl") and "/steps/subset/" in test_cfg["halu"]["seen_file"]
    again = run_experiment(expand(exp))
    assert not again.ran and len(again.skipped) == len(plan.steps)
    # the report from real predictions: a verdict with DELIA vs CIT, the budget the evaluation recorded
    from delia.experiments.report import build_report

    text = build_report(root).read_text()
    assert "- **delia (ratio 1) vs cit** on unseen phrasings: task-valid " in text
    assert "Generation budget (max_new_tokens): 4." in text and m["test.max_new_tokens"] == 4


def test_every_other_halu_method_runs_through_the_real_stages(make_exp, tiny_dir):
    methods = ["random_init", "mean_init", "fact_based", "neftune", "dmt", "wo_diversified", "wo_all", "w_all",
               "wo_diverse"]
    exp = make_exp(model=tiny_dir, threads=1, data={"valid": None},
                   grid={"methods": methods, "sizes": [4], "ratios": [1.0], "seeds": [42]},
                   methods={"fact_based": {"n_q": 2}},
                   sample={"max_new_tokens": 4, "engine_options": {"batch_size": 8}},
                   build={"exclude_truncated": False},  # the random tiny model never ends an answer in 4 tokens
                   train={"max_steps": 1, "batch_size": 4, "report_to": ["none"]},
                   eval={"limit": 2, "generation": {"max_new_tokens": 4}, "bootstrap": 10,
                         "analysis": {"hidden": True}})
    out = run_experiment(expand(exp))
    assert not out.failed and not out.blocked, out.failed
    root = Path(exp.out_dir)
    results = {r["method"]: r for r in json.loads((root / "results.json").read_text())}
    assert set(results) == set(methods)
    rows = {m: results[m]["metrics"].get("train.rows") for m in ("fact_based", "dmt", "wo_diversified", "wo_all")}
    assert rows == {"fact_based": 4 + 8 * 2, "dmt": 4 + 1, "wo_diversified": 8, "wo_all": 4}
    fixed = root / results["wo_all"]["steps"]["train"]
    data = json.loads(fixed.joinpath("delia_run.json").read_text())["data"]["path"]
    users = {json.loads(line)["messages"][0]["content"].rsplit("\n\n\n", 1)[1] for line in open(data)}
    assert len(users) == 1  # one fixed instruction
    nef = yaml.safe_load((root / results["neftune"]["steps"]["train"] / "train_config.yaml").read_text())
    assert nef["trl"] == {"neftune_noise_alpha": 5.0}
    for m, init in (("random_init", "random"), ("mean_init", "mean")):
        assert "l2.json.middle" in results[m]["metrics"]  # the token was added and probed
        info = json.loads((root / results[m]["steps"]["test"] / "metrics.json").read_text())["model"]
        assert [t["init"] for t in info["added_tokens"]] == [init]

"""Planning drift and held-out phrasings: shared base answers, one drift step per model, unchanged keys when off,
and the checks that keep the held-out queries and phrasings out of training."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.config import ConfigError
from delia.experiments import expand
from delia.experiments.runner import run_experiment
from delia.experiments.stages import resolve

DRIFT = ("drift_answers", "drift")


def _keys(plan, skip=()) -> list[tuple[str, str]]:
    return [(s.kind, s.key) for s in plan.steps if s.kind not in skip]


def test_drift_adds_one_shared_answer_step_and_one_drift_step_per_model(make_exp):
    off = expand(make_exp(grid={"methods": ["original", "icl", "cit", "delia"], "seeds": [1, 2]}))
    on = expand(make_exp(grid={"methods": ["original", "icl", "cit", "delia"], "seeds": [1, 2]},
                         drift={"queries": 8, "max_new_tokens": 32}))
    assert _keys(on, skip=DRIFT) == _keys(off)  # drift only adds steps
    assert {r.id: {n: s.key for n, s in r.steps.items() if n != "drift"} for r in on.runs} == \
           {r.id: {n: s.key for n, s in r.steps.items()} for r in off.runs}
    (answers,) = [s for s in on.steps if s.kind == "drift_answers"]
    drifts = [s for s in on.steps if s.kind == "drift"]
    trains = [s for s in on.steps if s.kind == "train"]
    assert len(drifts) == len(trains) + 1  # every adapter, plus the base (original and icl share it)
    for run in on.runs:
        d = run.steps["drift"]
        assert d.inputs["answers"] is answers
        assert d.inputs.get("adapter") is run.steps.get("train")
    by_method = {r.method: r.steps["drift"].key for r in on.runs if r.method in ("original", "icl")}
    assert by_method["original"] == by_method["icl"]
    assert answers.resolved["queries"] == 8 and answers.resolved["max_new_tokens"] == 32
    assert answers.resolved["keys"] == ["thought", "hallucination"] and "data" not in answers.resolved
    assert answers.fingerprint["sha256"]  # the query file is named by content


def test_drift_queries_must_stay_clear_of_self_sampling(make_exp, shared_data):
    exp = make_exp(grid={"methods": ["delia"], "sizes": [30], "ratios": [2.0]}, drift={"queries": 4960})
    with pytest.raises(ConfigError, match=r"drift queries are rows 41\.\.5000 of .*self-sampling reads its first 65"):
        expand(exp)
    expand(make_exp(grid={"methods": ["delia"], "sizes": [30], "ratios": [2.0]}, drift={"queries": 4935}))
    with pytest.raises(ConfigError, match="5001 held-out queries asked for"):
        expand(make_exp(grid={"methods": ["cit"]}, drift={"queries": 5001}))
    with pytest.raises(ConfigError, match=r"drift: \['data'\] are set by the experiment"):
        make_exp(drift={"data": "x.jsonl"})
    with pytest.raises(ConfigError, match=r"drift: max_new_tokens must be >= 1"):
        expand(make_exp(drift={"max_new_tokens": 0}))


def test_heldout_phrasings_are_checked_against_the_largest_training_size(make_exp, shared_data):
    spec = {"halu": {"instructions": "seen:1,heldout:1,unseen:1"}}
    with pytest.raises(ConfigError, match=r"11 of the phrasings .* occur in the first 100 rows .*below 50"):
        expand(make_exp(grid={"sizes": [30, 100]}, eval=spec))
    plain = expand(make_exp(grid={"sizes": [30]}))
    held = expand(make_exp(grid={"sizes": [30]}, eval=spec))
    test = next(s for s in held.steps if s.kind == "eval" and "halu.heldout_file" in s.fingerprint)
    assert test.volatile["halu"]["heldout_file"] == "builtin:halu/valid"
    assert not any("halu.heldout_file" in s.fingerprint for s in plain.steps)  # unused: not in any hash


def test_an_unset_heldout_file_leaves_the_eval_hash_alone():
    r = resolve("eval", {"data": "x.jsonl"}, [])
    assert "heldout_file" not in r["halu"]


def test_drift_runs_end_to_end_on_the_tiny_model(make_exp, tiny_dir, shared_data):
    exp = make_exp(model=tiny_dir, threads=1, data={"valid": None},
                   grid={"methods": ["original", "cit"], "sizes": [4], "ratios": [0.0], "seeds": [42]},
                   train={"max_steps": 1, "batch_size": 4, "report_to": ["none"]},
                   eval={"limit": 1, "dtype": "fp32", "generation": {"max_new_tokens": 4}, "bootstrap": 0,
                         "analysis": {"hidden": False}},
                   drift={"queries": 3, "max_new_tokens": 5, "batch_size": 2})
    plan = expand(exp)
    out = run_experiment(plan)
    assert not out.failed and not out.blocked, out.failed
    assert sorted(s.split("/")[0] for s in out.ran if s.startswith("drift")) == ["drift", "drift", "drift_answers"]
    root = Path(exp.out_dir)
    results = {r["method"]: r for r in json.loads((root / "results.json").read_text())}
    base, cit = results["original"]["metrics"], results["cit"]["metrics"]
    assert base["drift_n"] == cit["drift_n"] == 3
    assert base["drift_nll_base"] == cit["drift_nll_base"] == pytest.approx(base["drift_nll"])
    assert cit["drift_nll"] > 0 and cit["leak_rate"] in (0.0, 1 / 3, 2 / 3, 1.0)
    per = (root / results["cit"]["steps"]["drift"] / "drift.jsonl").read_text().splitlines()
    assert len(per) == 3 and {"nll_sum", "n_tokens", "leak", "answer"} <= set(json.loads(per[0]))
    ref = next(s for s in plan.steps if s.kind == "drift_answers").dir(root) / "answers.jsonl"
    answers = [json.loads(x) for x in ref.read_text().splitlines()]
    assert [a["row"] for a in answers] == [4998, 4999, 5000]  # the last rows of the query file
    header = (root / "results.csv").read_text().splitlines()[0].split(",")
    assert {"drift_nll", "drift_nll_base", "leak_rate", "drift_n"} <= set(header)

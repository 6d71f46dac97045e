"""A build never fails for lack of usable diverse rows: when the answers the builder excludes (cut at the sampling
budget, empty) leave a slice short, the slice samples more queries and keeps the shortest prefix with enough."""

from __future__ import annotations

import json
from pathlib import Path

from delia.experiments import expand
from delia.experiments.runner import run_experiment


def _step(plan, kind):
    (step,) = [s for s in plan.steps if s.kind == kind]
    return step


def test_a_short_slice_samples_more_and_the_real_build_then_has_enough(make_exp, fake_stages, tmp_path):
    from delia.mixing import BuildConfig, build

    fake_stages.cut_every = 4  # a quarter of the answers are cut at the budget
    exp = make_exp(grid={"methods": ["delia"]})  # 30 rows x ratio 2 = 60 rows; margin 0.05 -> 65 queries
    plan = expand(exp)
    out = run_experiment(plan)
    assert not out.failed
    sl, root = _step(plan, "slice"), Path(exp.out_dir)
    assert sl.config == {"n_queries": 65} and sl.volatile["need"] == 60
    # 65 answers hold 48 usable; the top-up samples more, and the slice keeps the first 80 (60 usable)
    assert fake_stages.calls["sample"] == 2
    summary = json.loads((sl.dir(root) / "done.json").read_text())["summary"]
    assert summary == {"rows": 80, "usable": 60, "topped_up": 15, "need": 60, "exclude_truncated": True}
    rows = [json.loads(ln) for ln in (sl.dir(root) / "cache.jsonl").read_text().splitlines()]
    from delia.sampling import load_queries

    assert [r["id"] for r in rows] == [q.id for q in load_queries(exp.data.queries, 80)]
    # the real builder on this slice: 60 diverse rows, the 20 cut answers excluded and counted
    down = _step(plan, "subset").dir(root) / "data.jsonl"
    m = build(BuildConfig(downstream=str(down), diverse=str(sl.dir(root) / "cache.jsonl"), ratio=2.0,
                          out=str(tmp_path / "b"), model=""))
    assert m["counts"]["diverse"] == 60 and m["excluded"]["by_reason"] == {"truncated (finish_reason=length)": 20}
    assert m["inputs"]["diverse"]["max_new_tokens"] == {"16": 80}


def test_a_slice_with_enough_rows_is_the_first_n_queries_as_before(make_exp, fake_stages):
    exp = make_exp(grid={"methods": ["delia"]})
    plan = expand(exp)
    run_experiment(plan)
    sl = _step(plan, "slice")
    assert fake_stages.calls["sample"] == 1
    assert json.loads((sl.dir(Path(exp.out_dir)) / "done.json").read_text())["summary"] == {"rows": 65, "usable": 65}


def test_too_few_queries_fail_with_a_message_that_names_sample_margin(make_exp, fake_stages, shared_data, tmp_path):
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join((shared_data / "diverse/alpaca_5000.jsonl").read_text().splitlines(True)[:70]))
    fake_stages.cut_every = 2  # half cut: 70 queries give 35 usable answers, 60 needed
    exp = make_exp(grid={"methods": ["delia"]}, data={"queries": str(queries)})
    out = run_experiment(expand(exp))
    (name, err), = [(k, v) for k, v in out.failed.items()]
    assert name.startswith("slice/")
    assert "the first 70 queries" in err and "hold 35 usable rows (35 truncated (finish_reason=length))" in err
    assert "needs 60" in err and "raise `sample_margin`" in err
    assert len(out.blocked) >= 3  # build, train, evaluations: nothing trained on a short slice


def test_allow_repeat_keeps_a_short_slice_as_it_was(make_exp, fake_stages):
    fake_stages.cut_every = 4
    exp = make_exp(grid={"methods": ["delia"]}, build={"allow_repeat": True})
    plan = expand(exp)
    run_experiment(plan)
    sl = _step(plan, "slice")
    assert "need" not in sl.volatile and fake_stages.calls["sample"] == 1
    assert json.loads((sl.dir(Path(exp.out_dir)) / "done.json").read_text())["summary"]["rows"] == 65


def test_a_top_up_stops_at_four_times_the_planned_queries(make_exp, fake_stages):
    fake_stages.cut_every = 1  # every answer cut: no margin helps, the budget is what is wrong
    out = run_experiment(expand(make_exp(grid={"methods": ["delia"]})))
    (err,) = out.failed.values()
    assert "the first 260 queries" in err and "hold 0 usable rows" in err and "at most 4x the 65 planned" in err
    assert "sample.max_new_tokens" in err


def test_a_topped_up_slice_is_redone_when_the_builds_exclusion_rule_changes(make_exp, fake_stages):
    fake_stages.cut_every = 4
    run_experiment(expand(make_exp(grid={"methods": ["delia"]})))
    fake_stages.calls.clear()
    exp = make_exp(grid={"methods": ["delia"]}, build={"exclude_truncated": False})
    plan = expand(exp)
    sl = _step(plan, "slice")
    run_experiment(plan)
    # same slice key, other rule: the slice is redone (the first 65 answers, all usable when cut ones count) and
    # the build under the new rule reads that, exactly as a fresh experiment would
    assert fake_stages.calls == {"build": 1, "train": 1, "eval": 2}
    assert json.loads((sl.dir(Path(exp.out_dir)) / "done.json").read_text())["summary"] == {"rows": 65, "usable": 65}
    fake_stages.calls.clear()
    run_experiment(expand(exp))
    assert sum(fake_stages.calls.values()) == 0  # and stays done

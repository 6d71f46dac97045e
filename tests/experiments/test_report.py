"""`delia report`: tables and figures rebuilt from saved results only, with hand-checkable numbers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.experiments import expand
from delia.experiments.report import Results, build_report
from delia.experiments.runner import run_experiment


def test_report_from_saved_results(make_exp, fake_stages, tmp_path):
    exp = make_exp(grid={"methods": ["original", "cit", "delia", "wo_diversified", "wo_all"], "seeds": [42, 43],
                         "ratios": [1.0, 2.0]}, methods={"wo_diversified": {"ratios": [1.0]}})
    run_experiment(expand(exp))
    path = build_report(exp.out_dir)
    text = path.read_text()
    # fake evals: base 0/10 task-valid per set, every trained model 5/10 -> 50.0 over 2 seeds; one row per ratio
    assert "| original | – | 1 | 0.0 [0.0, 0.0] | 0.0 [0.0, 0.0] |" in text
    assert "| delia | 2 | 2 | 50.0 [" in text and "| delia | 1 | 2 | 50.0 [" in text
    assert "| cit | – | 2 | 50.0 [" in text
    # the verdict opens the report: generated from the paired comparisons, and the budget cells named
    assert text.index("## Verdict") < text.index("## Main results")
    assert ("- **delia (ratio 2) vs cit** on unseen phrasings: task-valid +0.0 points [+0.0, +0.0], not significant"
            in text)
    assert "- **delia (ratio 2) vs original** on seen phrasings: task-valid +50.0 points [" in text
    assert "more than 2% of cases for original / seen (100.0%)" in text
    # label accuracy beside the majority class (gold 'no' on 7 of 10 examples)
    assert "| cit | unseen | 50.0 [" in text and "] | 70.0 | yes | 0.0 | 0.0 | 41.7 |" in text
    # a method run at a smaller ratio only is shown at its own largest ratio, not left out
    assert "| wo_diversified | 1 | 2 | 50.0 [" in text
    for title in ("## Main results", "## Label quality", "## Failure and finish reasons", "## Paired comparisons",
                  "## Across seeds", "## Table 1", "## Table 2", "## Table 4: ablations",
                  "## Robustness on unseen phrasings", "## Downstream loss and first-token state space"):
        assert title in text
    assert "| w/o diversified downstream data |" in text and "| w/o all |" in text
    # Table 4 shows DELIA at the ablation's ratio (1), not its largest (2): each row removes one component
    assert "DELIA and w/o diversified downstream data at ratio 1." in text
    assert "| w/ all (DELIA) | 2 | 50.0 [" in text
    # an ablation is paired with the run it removes one component from, not with every control
    assert "| wo_diversified (ratio 1) | delia (ratio 1) | unseen | task-valid |" in text
    assert "| wo_all | cit | unseen | task-valid |" in text and "| wo_all | delia" not in text
    assert "vs original (" not in text  # the relative gain over an untrained base scoring 0 is undefined: no column
    # ratio table: ratio 0 is CIT (fake state space 9.5 for trained models) -> reduction 0
    assert "| 0 | 2 | 1.500 | 9.50 | 0.0 |" in text
    for fig in ("fig2_l2_layers.png", "fig3_loss_vs_ratio.png", "fig4_state_space.png", "format_accuracy.png",
                "task_valid.png", "paired_differences.png"):
        assert (tmp_path / "exp/figures" / fig).stat().st_size > 1000
    # rebuilt from saved results alone: the same report after the step directories' metrics are gone
    res = Results(tmp_path / "exp")
    assert {r["method"] for r in res.rows} == {"original", "cit", "delia", "wo_diversified", "wo_all"}
    for m in (tmp_path / "exp/steps/train").glob("*/delia_run.json"):
        m.unlink()
    assert build_report(exp.out_dir).read_text() == text


def test_report_without_results_says_what_to_do(tmp_path):
    with pytest.raises(FileNotFoundError, match="delia experiment"):
        build_report(tmp_path)


def test_results_json_holds_every_grid_point(make_exp, fake_stages):
    exp = make_exp(grid={"methods": ["delia"], "seeds": [1, 2], "ratios": [1.0, 3.0], "sizes": [30, 65]})
    run_experiment(expand(exp))
    rows = json.loads((tmp := __import__("pathlib").Path(exp.out_dir) / "results.json").read_text())
    assert sorted((r["size"], r["ratio"], r["seed"]) for r in rows) == sorted(
        (n, r, s) for n in (30, 65) for r in (1.0, 3.0) for s in (1, 2))
    assert tmp.exists()


def test_per_prompt_outcomes_are_written_beside_the_report(make_exp, fake_stages, tmp_path):
    # items.csv holds every run's per-prompt 0/1 outcomes: per run and set they average to the report's scores
    import csv

    exp = make_exp(grid={"methods": ["original", "cit", "delia"], "seeds": [42, 43], "ratios": [1.0]})
    run_experiment(expand(exp))
    text = build_report(exp.out_dir).read_text()
    res = Results(tmp_path / "exp")
    with open(tmp_path / "exp/items.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(res.predictions(r)) for r in res.rows) > 0
    assert f"`items.csv` ({len(rows)} rows" in text
    assert {r["run"] for r in rows} == {r["run"] for r in res.rows}
    for run in res.rows:
        for s in ("seen", "unseen"):
            mine = [int(r["task_valid"]) for r in rows if r["run"] == run["run"] and r["set"] == s]
            expected = res.keyed(run, s, "task_valid")
            assert mine and sum(mine) == sum(expected.values()) and len(mine) == len(expected)
            assert sum(mine) / len(mine) == pytest.approx(run["metrics"][f"{s}.task_valid"])
    assert {r["method"]: r["task_valid"] for r in rows if r["set"] == "seen"}["original"] == "0"
    assert (tmp_path / "exp/drift_items.csv").read_text().startswith("run,method,ratio,seed,query_id,nll,leak")


def test_selection_table_names_the_kept_step_and_is_absent_without_validation():
    from types import SimpleNamespace

    from delia.experiments.tables import selection_table

    assert selection_table(SimpleNamespace(rows=[{"method": "cit", "seed": 1, "metrics": {"train.steps": 40}}])) == []
    rows = [{"method": "cit", "seed": 1, "metrics": {
        "train.steps": 28, "train.best_step": 16, "train.stopped_early": True, "train.valid_metric": "label_accuracy",
        "train.valid_score": 1.0, "train.valid_task_valid": 0.9667}}]
    table = selection_table(SimpleNamespace(rows=rows))
    assert table[0].startswith("## Model selection")
    assert "| `cit` | 1 | 16 | 28 | yes | label_accuracy | 100.0 | 96.7 |" in table


def test_the_report_answers_first_with_the_model_chosen_by_validation(make_exp, fake_stages, tmp_path):
    # cit (30 rows) validates better than delia (90 rows at ratio 2); the test scores are equal (fake evals)
    fake_stages.valid_score = lambda rows: 0.9 if rows == 30 else 0.8
    exp = make_exp(grid={"methods": ["original", "cit", "delia"], "seeds": [42, 43]})
    run_experiment(expand(exp))
    text = build_report(exp.out_dir).read_text()
    first = text[text.index("## Answer"):text.index("## Verdict")].strip().splitlines()
    assert text.index("## Answer") < text.index("## Verdict") and len(first) <= 25
    assert "**Use `cit`, seed 42** (kept at step 1, chosen by validation label_accuracy" in first[2]
    assert any(line.startswith("| **cit** | 90.0 | 50.0 [") for line in first)
    assert any(line.startswith("| delia (ratio 2) | 80.0 | 50.0 [") for line in first)
    assert any(line.startswith("| original | – | 0.0 [") for line in first)
    cit_train = json.loads((tmp_path / "exp/results.json").read_text())[1]["steps"]["train"]
    assert f"`{tmp_path / 'exp' / cit_train}`" in text and "load_trained(" in text
    assert f"`delia export {tmp_path / 'exp' / cit_train} {tmp_path / 'exp' / 'export' / 'cit'}`" in text
    from delia.experiments.answer import recommendation
    assert recommendation(Path(exp.out_dir)) == first + [""]  # what `delia run` prints at its end
    # a tie on validation (and no drift measured) goes to the simpler method, whatever the grid's order;
    # plain (validated with the format written out, not on the token's phrasings) is not compared
    fake_stages.valid_score = lambda rows: 0.9
    exp = make_exp(grid={"methods": ["original", "plain", "delia", "cit"], "seeds": [42]},
                   out=str(tmp_path / "exp2"))
    run_experiment(expand(exp))
    assert "**Use `cit`, seed 42**" in build_report(exp.out_dir).read_text()


def test_no_answer_section_without_validation(make_exp, fake_stages):
    exp = make_exp(grid={"methods": ["original", "cit"], "seeds": [42]})
    run_experiment(expand(exp))
    assert "## Answer" not in build_report(exp.out_dir).read_text()

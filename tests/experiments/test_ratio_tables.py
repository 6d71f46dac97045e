"""The report's effects by diverse-data ratio, on hand-made finished experiments (saved predictions and drift
rows only): a row per method and ratio, DELIA - cit_steps at the same ratio and DELIA - cit, a partial grid said as
such, a single-ratio report unchanged apart from the new section, and the figure."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from delia.experiments import ratio_tables
from delia.experiments.report import build_report
from delia.experiments.results import collect

VALID = "{'thought': 't', 'hallucination': 'no'}"
# task-valid 'no' on examples below the cut, prose elsewhere; gold 'no' on e00-e14 (majority class 75%)
CUT = {"cit": 10, "delia": 16, "cit_steps": 14, "original": 0, "delia@input": 15}
NLL = {"original": 0.6, "cit": 0.7, "delia": 0.5, "cit_steps": 0.9, "delia@input": 0.5}  # per query: this + 0.01 * query index


def _row(ex: int, valid: bool) -> dict:
    return {"example_id": f"e{ex:02d}", "instruction_id": "unseen/0", "set": "unseen",
            "raw": VALID if valid else "I think it is fine.", "finish_reason": "stop", "n_new_tokens": 9,
            "parsed": valid, "strict": valid, "pred_label": "no" if valid else None,
            "gold_label": "no" if ex < 15 else "yes", "reason": None if valid else "no '{' in the output",
            "value": None, "strict_reason": None}


def write_experiment(root: Path, runs: list[tuple[str, float | None, int | None]], drift: bool = True) -> None:
    """results.json + an eval (and drift) step per (method, ratio, seed); DELIA at ratio 10 is valid everywhere
    (label accuracy 75%) with drift NLL 0.45 (+ 0.01 * query index)."""
    rows = []
    for method, ratio, seed in runs:
        name = f"{method}-{ratio}-{seed}"
        cut, nll = (20, 0.45) if (method, ratio) == ("delia", 10.0) else (CUT[method], NLL[method])
        d = root / "steps/eval" / name
        d.mkdir(parents=True)
        d.joinpath("predictions.jsonl").write_text("".join(json.dumps(_row(ex, ex < cut)) + "\n" for ex in range(20)))
        steps = {"test": f"steps/eval/{name}", **({"train": f"steps/train/{name}"} if seed else {})}
        if drift:
            q = root / "steps/drift" / name
            q.mkdir(parents=True)
            q.joinpath("drift.jsonl").write_text("".join(
                json.dumps({"id": f"q{i}", "nll": nll + 0.01 * i, "leak": False}) + "\n" for i in range(8)))
            steps["drift"] = f"steps/drift/{name}"
        rows.append({"run": name, "method": method, "size": 20 if seed else None, "ratio": ratio, "seed": seed,
                     "steps": steps, "metrics": collect({"test": d})})
    root.joinpath("results.json").write_text(json.dumps(rows))


RATIO3 = [("original", None, None), *((m, r, s) for m, r in (("cit", None), ("delia", 3.0), ("cit_steps", 3.0))
                                      for s in (1, 2, 3))]


def test_two_ratios_with_a_partial_grid(tmp_path):
    # ratio 10: DELIA on one seed of three, its equal-steps control not run yet
    write_experiment(tmp_path, [*RATIO3, ("delia", 10.0, 1)])
    text = build_report(tmp_path).read_text()
    section = text.split("## Effects by diverse-data ratio")[1].split("\n## ")[0]
    # a row per (method, ratio), cit at ratio 0; task-valid, label accuracy beside the majority class, drift NLL
    assert "| cit | 0 | 3 | 50.0 [" in section and "| delia | 3 | 3 | 80.0 [" in section
    assert "| cit_steps | 3 | 3 | 70.0 [" in section
    assert "| delia | 10 | 1 † | 100.0 [100.0, 100.0] | 75.0 [55.0, 90.0] | 75.0 | 0.485 [0.469, 0.500] |" in section
    assert section.index("| cit | 0 |") < section.index("| delia | 3 |") < section.index("| cit_steps | 3 |") < \
        section.index("| delia | 10 |")
    assert "(the base model: 0.635)" in section  # 0.6 + mean of 0.00..0.07
    # DELIA - cit_steps at the same ratio: e14, e15 valid for DELIA only -> +10 points; drift shifted by -0.4 on
    # every query of every seed -> the interval is the point
    assert "| 3 | delia (ratio 3) | cit_steps (ratio 3) | task-valid | +10.0 | [" in section
    assert "| 3 | delia (ratio 3) | cit_steps (ratio 3) | drift NLL | -0.400 | [-0.400, -0.400] | yes | 3 / 3 |" \
        in section
    # DELIA - cit at each ratio: labels right on e00-e14 vs e00-e09 -> +25 points
    assert "| 3 | delia (ratio 3) | cit | label accuracy | +25.0 | [" in section
    assert "| 10 | delia (ratio 10) | cit | task-valid | +50.0 | [" in section
    assert "| 10 | delia (ratio 10) | cit | drift NLL | -0.250 | [-0.250, -0.250] | yes | 1 / 3 |" in section
    # never DELIA at one ratio against the control of another, anywhere in the report
    assert "delia (ratio 10) | cit_steps (ratio 3)" not in text and "delia (ratio 10) vs cit_steps" not in text
    # a one-seed interval is not presented as covering training variance; what is missing is said
    assert "† one seed. With one training seed on a side, an interval covers the sampling of test examples only" \
        in section
    assert "**Not yet in the grid**: delia at ratio 10: seed 1 (missing 2, 3); cit_steps at ratio 10: no finished " \
           "run." in section
    # the verdict: DELIA vs cit at both ratios, vs cit_steps at ratio 3, and the seeds behind each
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    assert "- **delia (ratio 3) vs cit_steps (ratio 3)** on unseen phrasings: task-valid +10.0 points [" in verdict
    assert "- **delia (ratio 10) vs cit** on unseen phrasings: task-valid +50.0 points [" in verdict
    assert "1 vs 3 seeds." in verdict and "With one training seed on a side" in verdict
    assert ("Ratios 3, 10 (cit = ratio 0). Seeds: cit at ratio 0: seeds 1, 2, 3; delia at ratio 3: seeds 1, 2, 3; "
            "cit_steps at ratio 3: seeds 1, 2, 3; delia at ratio 10: seed 1. Missing: delia at ratio 10: seed 1 "
            "(missing 2, 3); cit_steps at ratio 10: no finished run") in verdict
    assert "- **delia (ratio 10) vs cit**, drift from the base" in verdict
    # the main table and Table 2 show every ratio
    assert "| delia | 3 | 3 | 80.0 [" in text and "| delia | 10 | 1 | 100.0 [" in text
    assert "| delia (ratio 3) | 80.0 [" in text and "| delia (ratio 10) | 100.0 [" in text
    assert (tmp_path / "figures/ratio_effects.png").stat().st_size > 1000
    assert "![Effects by diverse-data ratio](figures/ratio_effects.png)" in text


def test_complete_two_ratio_grid_has_no_missing_line(tmp_path):
    write_experiment(tmp_path, [*RATIO3, *(("delia", 10.0, s) for s in (1, 2, 3)),
                                *(("cit_steps", 10.0, s) for s in (1, 2, 3))])
    text = build_report(tmp_path).read_text()
    assert "Not yet in the grid" not in text and "Missing:" not in text and "†" not in text
    # cit_steps at ratio 10 scores as at ratio 3 (70% task-valid, drift 0.9): DELIA at 10 is 100% and 0.45
    assert "| 10 | delia (ratio 10) | cit_steps (ratio 10) | task-valid | +30.0 | [" in text
    assert "| 10 | delia (ratio 10) | cit_steps (ratio 10) | drift NLL | -0.450 | [-0.450, -0.450] | yes | 3 / 3 |" \
        in text
    assert "Ratios 3, 10 (cit = ratio 0)." in text.split("## Main results")[0]


def test_single_ratio_report_changes_only_by_the_new_section(tmp_path, monkeypatch):
    write_experiment(tmp_path, RATIO3)
    text = build_report(tmp_path).read_text()
    assert "## Effects by diverse-data ratio" in text and "| 3 | delia (ratio 3) | cit | task-valid | +30.0 |" in text
    # one ratio, every seed there: no coverage line in the verdict, tables keep the method's own name
    assert "Ratios 3" not in text and "Not yet in the grid" not in text
    assert "| delia | 80.0 [" in text  # Table 2 as before
    # without the new section and figure, the report is what it was
    monkeypatch.setattr(ratio_tables, "effects", lambda *a: None)
    before = build_report(tmp_path).read_text()
    section = "## Effects by diverse-data ratio" + text.split("## Effects by diverse-data ratio")[1].split("\n## ")[0]
    expected = text.replace(section + "\n", "").replace("![Effects by diverse-data ratio](figures/ratio_effects.png)\n",
                                                        "")
    answer = "**Does DELIA beat" + expected.split("**Does DELIA beat")[1].split("Paired differences (A - B")[0]
    expected = expected.replace(answer, "")
    assert before == expected and before != text


def test_a_method_restricted_to_some_ratios_is_not_missing_elsewhere(tmp_path):
    # delia@input runs at ratio 3 only (`methods: {delia@input: {ratios: [3]}}` in the saved config): the coverage
    # lines do not list it at ratio 10; without the restriction they do
    runs = [*RATIO3, *(("delia@input", 3.0, s) for s in (1, 2, 3)), *(("delia", 10.0, s) for s in (1, 2, 3)),
            *(("cit_steps", 10.0, s) for s in (1, 2))]
    write_experiment(tmp_path, runs)
    text = build_report(tmp_path).read_text()
    assert "delia@input at ratio 10: no finished run" in text
    tmp_path.joinpath("experiment.yaml").write_text("name: x\nmethods:\n  delia@input: {ratios: [3]}\n")
    text = build_report(tmp_path).read_text()
    assert "delia@input at ratio 10" not in text
    assert "**Not yet in the grid**: cit_steps at ratio 10: seeds 1, 2 (missing 3)." in text
    # a restriction elsewhere does not hide a missing run: delia@input lacking a seed at ratio 3 is still said
    shutil.rmtree(tmp_path / "steps")
    write_experiment(tmp_path, [r for r in runs if r != ("delia@input", 3.0, 3)])
    assert "delia@input at ratio 3: seeds 1, 2 (missing 3)" in build_report(tmp_path).read_text()


def test_the_verdict_opens_with_the_answer_per_control_and_ratio(tmp_path, monkeypatch):
    write_experiment(tmp_path, [*RATIO3, ("delia", 10.0, 1)])
    text = build_report(tmp_path).read_text()
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    assert verdict.lstrip().startswith("**Does DELIA beat plain instruction tuning?**")
    table = [line for line in verdict.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| DELIA at ratio | control | what is equal | seeds DELIA / control | task-valid "
                               "(unseen) | label accuracy (unseen; always the majority label: 75.0) | drift from "
                               "the base (NLL) |")
    rows = [r for r in table[1:] if not r.startswith("|---")]
    # ratio order, the equal-steps control first; drift -0.4 on every query: closer, the interval is the point
    assert [r.split(" | ")[:2] for r in rows] == [["| 3", "cit_steps"], ["| 3", "cit"], ["| 10", "cit_steps"],
                                                 ["| 10", "cit"]]
    assert "| 3 / 3 |" in rows[0] and rows[0].endswith("**closer to the base** (-0.400 [-0.400, -0.400]) |")
    # the control the grid runs but has not finished at ratio 10 is said, not left out
    assert rows[2] == "| 10 | cit_steps | CIT, equal optimizer steps | 1 / 0 | not run yet | not run yet | " \
                      "not run yet |"
    assert "| 1 / 3 † | **better** (+50.0 [" in rows[3] and "† one seed on a side." in verdict
    assert "both below the majority class" not in verdict  # DELIA's label accuracy equals the majority class
    # a label "gain" where neither model beats always answering the majority label is said to be one
    monkeypatch.setitem(CUT, "delia", 12)
    shutil.rmtree(tmp_path / "steps")
    write_experiment(tmp_path, RATIO3)
    verdict = build_report(tmp_path).read_text().split("## Verdict")[1].split("## Main results")[0]
    row = next(r for r in verdict.splitlines() if r.startswith("| 3 | cit |"))
    assert "; both below the majority class |" in row and "not run yet" not in verdict


def test_missing_metrics_are_skipped_not_crashed(tmp_path):
    # no drift steps: the section and the figure have task-valid and label accuracy only
    write_experiment(tmp_path, [*RATIO3, ("delia", 10.0, 1)], drift=False)
    text = build_report(tmp_path).read_text()
    section = text.split("## Effects by diverse-data ratio")[1].split("\n## ")[0]
    assert "| method | ratio | seeds | unseen task-valid | unseen label acc | majority class |" in section
    assert "drift NLL |" not in section
    assert (tmp_path / "figures/ratio_effects.png").stat().st_size > 1000


@pytest.mark.parametrize("runs", [[("original", None, None), ("cit", None, 1)],  # no DELIA
                                  [("original", None, None), ("delia", 3.0, 1)]])  # DELIA without any control
def test_no_delia_no_section_and_delia_alone_no_differences(tmp_path, runs):
    write_experiment(tmp_path, runs)
    text = build_report(tmp_path).read_text()
    if runs[-1][0] == "cit":
        assert "Effects by diverse-data ratio" not in text and not (tmp_path / "figures/ratio_effects.png").exists()
    else:
        section = text.split("## Effects by diverse-data ratio")[1].split("\n## ")[0]
        assert "| delia | 3 | 1 † | 80.0 [" in section and "Paired differences" not in section
        assert (tmp_path / "figures/ratio_effects.png").exists()


def test_runs_evaluated_in_different_precisions_are_flagged(tmp_path):
    """A grid that spans machines (or runs loaded before the trained precision was recorded) can evaluate its
    runs in different precisions: the report says which, and says nothing when they agree."""
    write_experiment(tmp_path, RATIO3)
    assert "**Precision**" not in build_report(tmp_path).read_text()  # no precision recorded: nothing to say
    rows = json.loads((tmp_path / "results.json").read_text())
    for r in rows:
        d = tmp_path / r["steps"]["test"]
        dtype = "bfloat16" if r["method"] == "cit" else "fp32+bf16-autocast"
        d.joinpath("metrics.json").write_text(json.dumps({"task": "halu", "model": {"dtype": dtype}}))
        r["metrics"] = collect({"test": d})
        assert r["metrics"]["test.precision"] == dtype
    (tmp_path / "results.json").write_text(json.dumps(rows))
    text = build_report(tmp_path).read_text()
    note = text.split("**Precision**: ")[1].split("\n")[0]
    assert note.startswith("the runs were evaluated in different numeric precisions (bfloat16: cit seed 1, cit seed "
                           "2, cit seed 3; fp32+bf16-autocast: original, delia (ratio 3) seed 1")
    assert "scored for drift" not in text
    for r in rows:  # all alike: no note
        tmp_path.joinpath(r["steps"]["test"], "metrics.json").write_text(
            json.dumps({"task": "halu", "model": {"dtype": "bfloat16"}}))
        r["metrics"] = collect({"test": tmp_path / r["steps"]["test"]})
    (tmp_path / "results.json").write_text(json.dumps(rows))
    assert "**Precision**" not in build_report(tmp_path).read_text()

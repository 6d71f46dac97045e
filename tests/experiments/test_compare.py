"""`delia report` on a hand-made finished experiment: old-format predictions re-scored, pairs, verdict, tables."""

from __future__ import annotations

import json
from pathlib import Path

from delia.experiments.compare import Comparison, Group, paired, pairs, scale_note
from delia.experiments.report import build_report
from delia.experiments.results import collect
from delia.experiments.stats import Interval

VALID = "{'thought': 't', 'hallucination': '%s'}"


def old_row(ex: int, phrasing: int, raw: str, finish: str = "stop") -> dict:
    """A predictions.jsonl row as `delia eval` wrote it before the outcome fields existed."""
    ok = raw.startswith("{") and raw.endswith("}")
    label = raw.split("'hallucination': '")[1][:-2] if ok and "'hallucination'" in raw else None
    strict = ok and "'thought'" in raw and label is not None
    return {"example_id": f"e{ex:02d}", "instruction_id": f"unseen/{phrasing}", "set": "unseen", "raw": raw,
            "finish_reason": finish, "n_new_tokens": 9, "parsed": ok, "strict": strict,
            "pred_label": label if label in ("yes", "no") else None, "gold_label": "no" if ex < 15 else "yes",
            "reason": None if ok else "no '{' in the output", "value": None, "strict_reason": None}


def write_experiment(root: Path, replies: dict[str, callable]) -> None:
    """results.json + one eval step per run; `replies[step](ex, phrasing)` -> (raw, finish)."""
    runs = [("original/base", "original", None, None, "o"), ("cit/seed1", "cit", None, 1, "c1"),
            ("cit/seed2", "cit", None, 2, "c2"), ("delia/r3-seed1", "delia", 3.0, 1, "d1"),
            ("delia/r3-seed2", "delia", 3.0, 2, "d2"), ("icl/base", "icl", None, None, "i")]
    rows = []
    for run, method, ratio, seed, step in runs:
        d = root / "steps/eval" / step
        d.mkdir(parents=True)
        preds = [old_row(ex, ph, *replies[step](ex, ph)) for ex in range(20) for ph in range(2)]
        preds = [p for p in preds if p is not None]
        d.joinpath("predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        steps = {"test": f"steps/eval/{step}", **({"train": f"steps/train/{step}"} if seed else {})}
        rows.append({"run": run, "method": method, "size": 20 if seed else None, "ratio": ratio, "seed": seed,
                     "steps": steps, "metrics": collect({"test": d})})
    root.joinpath("results.json").write_text(json.dumps(rows))


def test_report_recomputes_from_old_predictions_and_states_the_verdict(tmp_path):
    cut = ("{'thought': \"still going", "length")
    replies = {
        "o": lambda ex, ph: ("I think it is fine.", "stop"),
        # CIT: valid 'no' on e00-e09; other keys (the paper's lenient rule would count these) on e10-e19
        "c1": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
        "c2": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
        # DELIA: valid 'no' everywhere, except seed 2 cut at the budget on e19 phrasing 1
        "d1": lambda ex, ph: (VALID % "no", "stop"),
        "d2": lambda ex, ph: cut if (ex, ph) == (19, 1) else (VALID % "no", "stop"),
        "i": lambda ex, ph: (VALID % "yes", "stop"),
    }
    write_experiment(tmp_path, replies)
    text = build_report(tmp_path).read_text()
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    # task-valid: DELIA 1 - 1/80 (one cut reply of 80), CIT 0.5 -> +48.75 points; labels: gold 'no' on e00-e14,
    # DELIA right on 15 examples (minus nothing: e19 is 'yes' anyway), CIT right on e00-e09 -> (30 - 20) / 40
    assert "**delia (ratio 3) vs cit** on unseen phrasings: task-valid +48.8 points [" in verdict
    assert "significant; label accuracy +25.0 points [" in verdict
    assert "(always answering the majority label scores 75.0%) — 20 examples, 40 prompts, 2 vs 2 seeds." in verdict
    assert "**delia (ratio 3) vs original** on unseen phrasings: task-valid +98.8 points [" in verdict
    assert "icl" not in verdict  # untrained methods are not compared with CIT
    assert "With one training seed" not in verdict  # two seeds each: no single-seed warning
    # the budget: 1 of 80 DELIA replies (1.25%) is under the 2% line
    assert "No method hit the generation budget in more than 2% of its replies" in verdict
    # main table: the headline beside exact keys, lenient (CIT's other-keys dicts count there) and label accuracy
    assert "| cit | – | 2 | 50.0 [" in text and "] | 100.0 [100.0, 100.0] | 25.0 [" in text
    assert "| delia | 3 | 2 | 98.8 [" in text
    # failure and finish reasons per method and set, pooled over seeds
    # (columns: replies, ok, cut_at_budget, no_brace, wrong_keys, finish stop, finish length, budget hits %)
    assert "| cit | unseen | 80 | 40 | 0 | 0 | 40 | 80 | 0 | 0.0 |" in text
    assert "| delia (ratio 3) | unseen | 80 | 79 | 1 | 0 | 0 | 79 | 1 | 1.2 |" in text
    assert "| original | unseen | 40 | 0 | 0 | 40 | 0 | 40 | 0 | 0.0 |" in text
    # label quality: ICL always says 'yes' (recall 100%) and scores 25%, below the 75% majority class
    assert "| icl | unseen | 25.0 [10.0, 45.0] | 75.0 | yes | 40.0 | 100.0 | 20.0 |" in text
    # per-seed means with spread: DELIA seeds 100 and 97.5
    assert "| delia (ratio 3) | 2 | 98.8 ± 1.8 (97.5–100.0) |" in text
    assert (tmp_path / "figures/task_valid.png").stat().st_size > 1000
    assert (tmp_path / "figures/paired_differences.png").stat().st_size > 1000
    # a pure function of the saved files
    assert build_report(tmp_path).read_text() == text


def test_only_keys_both_methods_have_are_paired(tmp_path):
    replies = {k: (lambda ex, ph: (VALID % "no", "stop")) for k in ("o", "c1", "c2", "d1", "d2", "i")}
    write_experiment(tmp_path, replies)
    for step in ("d1", "d2"):  # DELIA was evaluated on e00-e11 only
        f = tmp_path / "steps/eval" / step / "predictions.jsonl"
        f.write_text("".join(x + "\n" for x in f.read_text().splitlines() if int(json.loads(x)["example_id"][1:]) < 12))
    text = build_report(tmp_path).read_text()
    assert "| delia (ratio 3) | cit | unseen | task-valid | +0.0 | [+0.0, +0.0] | no | 12 | 24 | 2 / 2 |" in text


def test_pairs_cover_every_cit_like_reference_once():
    g = {m: Group(m, None, [{}], trained=m not in ("original", "icl")) for m in
         ("original", "icl", "cit", "cit_steps", "delia", "wo_all")}
    g["w_all"] = Group("w_all", None, [{}], True, twin_of="delia")
    got = {(a.method, b.method) for a, b in pairs(list(g.values()))}
    assert got == {("cit_steps", "cit"), ("delia", "cit"), ("wo_all", "cit"), ("delia", "cit_steps"),
                   ("delia", "original")}


def test_an_ablation_pairs_with_the_run_it_removes_one_component_from():
    gs = [Group("cit", None, [{}], True), Group("wo_all", None, [{}], True),
          *(Group(m, r, [{}], True) for m in ("delia", "cit_steps") for r in (3.0, 10.0)),
          Group("wo_diversified", 3.0, [{}], True)]
    got = {(a.label, b.label) for a, b in pairs(gs) if a.method.startswith("wo_")}
    # w/o diversified = DELIA with one fixed instruction (same ratio); w/o all = CIT with one fixed instruction
    assert got == {("wo_diversified (ratio 3)", "delia (ratio 3)"), ("wo_all", "cit")}


class _Keyed:
    """Results stand-in: each run carries its (example id, instruction id) -> outcome map."""

    def keyed(self, run, set_name, metric):
        return run[set_name]


def test_methods_scored_under_their_own_phrasings_pair_by_example():
    # DELIA "seen" on two of its training phrasings per seed; the ablation on its one fixed instruction
    delia = Group("delia", 3.0, [{"seen": {("e0", "seen/1"): 1.0, ("e1", "seen/2"): 1.0, ("e2", "seen/1"): 0.0}}], True)
    fixed = Group("wo_diversified", 3.0, [{"seen": {("e0", "fixed"): 1.0, ("e1", "fixed"): 0.0,
                                                     ("e2", "fixed"): 0.0}}], True)
    d = paired(_Keyed(), fixed, delia, "seen", "task_valid")
    assert d.n_keys == 3 and abs(d.mean - (-1 / 3)) < 1e-9
    # two prompts of one example on a side cannot be paired by example alone: no comparison, not a wrong one
    two = Group("delia", 3.0, [{"seen": {("e0", "seen/1"): 1.0, ("e0", "seen/2"): 0.0}}], True)
    assert paired(_Keyed(), fixed, two, "seen", "task_valid").n_keys == 0


def test_a_recipe_variant_pairs_with_its_own_method_at_the_same_ratio():
    gs = [Group("cit", None, [{}], True), Group("cit@paper", None, [{}], True),
          *(Group(m, r, [{}], True) for m in ("delia", "delia@input") for r in (3.0, 10.0))]
    got = {(a.label, b.label) for a, b in pairs(gs)}
    assert ("delia@input (ratio 3)", "delia (ratio 3)") in got and ("delia@input (ratio 10)", "delia (ratio 10)") in got
    assert ("delia@input (ratio 3)", "delia (ratio 10)") not in got
    assert len([p for p in got if set(p) == {"cit", "cit@paper"}]) == 1  # once, in either order


def test_an_equal_steps_control_pairs_only_at_its_own_ratio():
    gs = [Group("original", None, [{}], False), Group("cit", None, [{}], True),
          *(Group(m, r, [{}], True) for m in ("delia", "cit_steps") for r in (3.0, 10.0))]
    got = {(a.label, b.label) for a, b in pairs(gs)}
    assert got == {("delia (ratio 3)", "cit"), ("delia (ratio 10)", "cit"), ("cit_steps (ratio 3)", "cit"),
                   ("cit_steps (ratio 10)", "cit"), ("delia (ratio 3)", "cit_steps (ratio 3)"),
                   ("delia (ratio 10)", "cit_steps (ratio 10)"), ("delia (ratio 3)", "original"),
                   ("delia (ratio 10)", "original")}


def test_a_small_run_says_what_it_can_show_and_names_the_larger_run(tmp_path):
    replies = {"o": lambda ex, ph: ("I think it is fine.", "stop"),
               "c1": lambda ex, ph: (VALID % "no", "stop"), "c2": lambda ex, ph: (VALID % "no", "stop"),
               "d1": lambda ex, ph: (VALID % "no", "stop") if ex % 2 else ("no brace", "stop"),
               "d2": lambda ex, ph: (VALID % "no", "stop"), "i": lambda ex, ph: (VALID % "yes", "stop")}
    write_experiment(tmp_path, replies)
    (tmp_path / "experiment.yaml").write_text("name: small\nevidence: docs/big/report.md\n")
    text = build_report(tmp_path).read_text()
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    # 20 examples and 2 seeds: below the evidence size. The only tuned pair is DELIA - CIT (-25 points: d1 fails on
    # even examples); the note quotes the width of its interval in the comparison table
    row = text.split("| delia (ratio 3) | cit | unseen | task-valid | -25.0 | [")[1].split("]")[0]
    low, high = (float(x) for x in row.split(", "))
    note = verdict.split("**What a run this size can show**: ")[1]
    import re

    assert note.startswith("20 test examples, 2 training seeds per tuned method; the interval between two tuned "
                           "models spans up to ")
    widest = re.match(r".*?spans up to (\d+) points here \(([a-z ]+)\)\.", note)
    assert widest and int(widest[1]) >= round(high - low)  # the widest of every compared metric
    assert high - low > 25
    assert "it cannot rank two tuned methods" in note and "A larger run of this comparison: docs/big/report.md." in note


def test_a_run_of_the_evidence_size_gets_no_scale_note():
    def group(method, seeds, trained=True):
        return Group(method, None, [{}] * seeds, trained)

    def comp(a, b, n):
        return Comparison(a, b, "unseen", "task_valid", Interval(0.01, -0.05, 0.07, n, n))

    big = [comp(group("delia", 3), group("cit", 3), 300), comp(group("delia", 3), group("original", 1, False), 300)]
    assert scale_note(big, "docs/x.md") == []
    small = [comp(group("delia", 3), group("cit", 3), 40)]  # enough seeds, too few examples
    assert scale_note(small)[1].startswith("**What a run this size can show**: 40 test examples, 3 training "
                                           "seeds per tuned method; the interval between two tuned models spans "
                                           "up to 12 points here (task valid).")
    assert "larger run" not in scale_note(small)[1]
    one_seed = [comp(group("delia", 1), group("cit", 1), 300)]
    assert "1 training seed per tuned method" in scale_note(one_seed)[1]


def test_a_grid_in_progress_names_the_runs_with_too_few_seeds():
    # most of the grid has 3 seeds and 300 examples; DELIA at ratio 10 has one: the note names it, not "1 training
    # seed per tuned method"
    def group(method, seeds, ratio=None):
        return Group(method, ratio, [{}] * seeds, True)

    def comp(a, b):
        return Comparison(a, b, "unseen", "task_valid", Interval(0.01, -0.05, 0.07, 300, 300))

    grid = [comp(group("delia", 3, 3.0), group("cit", 3)), comp(group("delia", 1, 10.0), group("cit", 3)),
            comp(group("delia", 3, 3.0), group("cit_steps", 3, 3.0))]
    note = scale_note(grid)[1]
    assert note.startswith("**What a run this size can show**: 300 test examples; fewer than 3 training seeds for "
                           "delia (ratio 10) (1 seed); the interval between two tuned models spans up to 12 points here "
                           "(task valid). A comparison of two tuned methods that involves it cannot rank them")
    assert "1 training seed per tuned method" not in note
    assert scale_note(grid[:1] + grid[2:]) == []  # every run has 3 seeds: no note


def test_the_scale_note_quotes_the_widest_metric_not_only_task_valid():
    # issue 24: label intervals ~38 points wide, task-valid 0 wide: the note said "up to 0 points"
    def group(method):
        return Group(method, None, [{}], True)

    narrow = Comparison(group("delia"), group("cit"), "unseen", "task_valid", Interval(0.0, 0.0, 0.0, 80, 80))
    wide = Comparison(group("delia"), group("cit"), "unseen", "label_accuracy", Interval(-0.17, -0.36, 0.02, 80, 80))
    note = scale_note([narrow, wide])[1]
    assert "spans up to 38 points here (label accuracy)" in note

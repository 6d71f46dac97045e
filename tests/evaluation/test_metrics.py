"""Metric values equal hand-computed ones; BLEU/chrF++ equal sacrebleu; bootstrap is seeded and sane."""

import math

import pytest
import sacrebleu

from delia.evaluation import metrics as M
from delia.evaluation.outcomes import outcome


def halu(parsed, strict, pred, gold, finish="stop"):
    """A saved prediction with its outcome fields, as `delia eval` writes it."""
    p = {"parsed": parsed, "strict": strict, "pred_label": pred, "gold_label": gold, "finish_reason": finish,
         "reason": None if parsed else "no '{' in the output"}
    return {**p, **outcome(p)}


ROWS = [
    halu(True, True, "yes", "yes"),    # valid, TP
    halu(True, True, "no", "yes"),     # valid, FN
    halu(True, False, "yes", "yes"),   # extra keys: lenient-parsed, but not task-valid -> no label, FN
    halu(False, False, None, "yes"),   # unparsed: wrong, FN
    halu(True, True, "no", "no"),      # valid, TN for yes / TP for no
    halu(True, True, None, "no"),      # exact keys, label 'maybe' (pred_label None): bad label
]


def test_halu_metrics_by_hand():
    assert M.compute("task_valid", ROWS) == pytest.approx(3 / 6)
    assert M.compute("format_accuracy", ROWS) == pytest.approx(5 / 6)
    assert M.compute("format_accuracy_strict", ROWS) == pytest.approx(4 / 6)
    # right labels: rows 1 and 5 only; row 3's right label does not count (its keys are wrong)
    assert M.compute("label_accuracy", ROWS) == pytest.approx(2 / 6)
    # yes: TP=1, predicted yes=1, gold yes=4 -> P=1, R=1/4, F1=2/5
    assert M.compute("label_precision", ROWS) == pytest.approx(1.0)
    assert M.compute("label_recall", ROWS) == pytest.approx(1 / 4)
    assert M.compute("label_f1", ROWS) == pytest.approx(2 / 5)
    # no: TP=1, predicted no=2, gold no=2 -> F1 = 2/4
    assert M.compute("label_f1_no", ROWS) == pytest.approx(1 / 2)
    assert M.compute("label_macro_f1", ROWS) == pytest.approx((2 / 5 + 1 / 2) / 2)
    # majority class: 4 of 6 gold labels are 'yes'
    assert M.compute("majority_class", ROWS) == pytest.approx(4 / 6)


def test_macro_f1_averages_the_classes_that_occur():
    only_no = [halu(True, True, "no", "no"), halu(True, True, "no", "no"), halu(False, False, None, "no")]
    # 'yes' occurs neither as gold nor as prediction: macro = F1(no) = 2*2 / (2 + 3)
    assert M.compute("label_macro_f1", only_no) == pytest.approx(4 / 5)
    assert math.isnan(M.compute("label_f1", only_no))
    assert M.compute("majority_class", only_no) == 1.0
    wrong_yes = only_no + [halu(True, True, "yes", "no")]  # a predicted 'yes' with no gold yes: F1(yes) = 0
    assert M.compute("label_macro_f1", wrong_yes) == pytest.approx((0 + 2 * 2 / (2 + 4)) / 2)


def test_undefined_values_are_nan():
    rows = [halu(True, True, "no", "no")]
    assert math.isnan(M.compute("label_precision", rows))
    assert math.isnan(M.compute("label_recall", rows))
    assert math.isnan(M.compute("label_f1", rows))
    assert math.isnan(M.compute("format_accuracy", []))


HYPS = ["The cat sat on the mat.", "Hún fór heim í gær", "a completely different sentence", ""]
REFS = ["The cat is sitting on the mat.", "Hún fór heim í gær.", "Nothing in common here", "Empty hypothesis"]


def test_bleu_and_chrfpp_equal_sacrebleu():
    rows = [{"hyp": h, "ref": r} for h, r in zip(HYPS, REFS)]
    assert M.compute("bleu", rows) == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REFS]).score, abs=1e-9)
    chrf = sacrebleu.metrics.CHRF(word_order=2).corpus_score(HYPS, [REFS]).score
    assert M.compute("chrf++", rows) == pytest.approx(chrf, abs=1e-9)
    assert M.compute("bleu", rows[:1]) == pytest.approx(sacrebleu.corpus_bleu(HYPS[:1], [REFS[:1]]).score)
    same = [{"hyp": "one two three four five", "ref": "one two three four five"}]
    assert M.compute("bleu", same) == pytest.approx(100.0)


def test_bootstrap_is_seeded_and_brackets_the_value():
    rows = [halu(i % 3 != 0, True, "no", "no") for i in range(60)]
    v, lo, hi = M.bootstrap("format_accuracy", rows, n=500, seed=1)
    assert v == pytest.approx(40 / 60)
    assert lo < v < hi and 0.5 < lo and hi < 0.8
    assert (v, lo, hi) == M.bootstrap("format_accuracy", rows, n=500, seed=1)
    # the normal approximation: p +- 1.96 * sqrt(p (1 - p) / n) = [0.548, 0.786]
    half = 1.96 * math.sqrt(v * (1 - v) / 60)
    assert lo == pytest.approx(v - half, abs=0.03) and hi == pytest.approx(v + half, abs=0.03)
    v0, lo0, hi0 = M.bootstrap("format_accuracy", rows, n=0)
    assert v0 == v and math.isnan(lo0) and math.isnan(hi0)


def test_cluster_bootstrap_resamples_examples():
    """Each example answered under 3 phrasings identically: resampling examples gives the single-row interval,
    while treating the 3x rows as independent would give a too-narrow one."""
    rows = [halu(i % 3 != 0, True, "no", "no") for i in range(60)]
    tripled = [r for r in rows for _ in range(3)]
    ids = [i for i in range(60) for _ in range(3)]
    single = M.bootstrap("format_accuracy", rows, n=500, seed=3, groups=list(range(60)))
    assert M.bootstrap("format_accuracy", tripled, n=500, seed=3, groups=ids) == pytest.approx(single)
    naive = M.bootstrap("format_accuracy", tripled, n=500, seed=3)
    assert naive[2] - naive[1] < 0.75 * (single[2] - single[1])


def test_bootstrap_of_corpus_bleu_matches_resampled_sacrebleu():
    """A resample is a count vector over sentences: the same as scoring the resampled corpus with sacrebleu."""
    import numpy as np

    rows = [{"hyp": h, "ref": r} for h, r in zip(HYPS, REFS)]
    stats = M.METRICS.get("bleu").stats(rows)
    counts = np.array([2, 0, 1, 1])
    idx = [0, 0, 2, 3]
    expect = sacrebleu.corpus_bleu([HYPS[i] for i in idx], [[REFS[i] for i in idx]]).score
    assert M.METRICS.get("bleu").reduce(counts @ stats) == pytest.approx(expect)


def test_robustness_summary():
    s = M.summarize({"a": 0.5, "b": 0.9, "c": 0.7, "d": math.nan})
    assert s["n_phrasings"] == 3
    assert s["mean"] == pytest.approx(0.7) and s["min"] == 0.5 and s["max"] == 0.9
    assert s["spread"] == pytest.approx(0.4)
    assert s["std"] == pytest.approx(math.sqrt(((0.2) ** 2 * 2) / 3))


def test_metrics_are_registered():
    names = set(M.METRICS)
    assert {"format_accuracy", "format_accuracy_strict", "label_accuracy", "label_precision", "label_recall",
            "label_f1", "bleu", "chrf++", "bleurt", "comet"} <= names


def test_majority_class_counts_any_label_set():
    # a user's label task (not halu's yes/no): the floor is the most frequent gold label's share
    rows = [{"gold_label": g, "example_id": str(i)} for i, g in enumerate(["english"] * 3 + ["icelandic"])]
    assert M.compute("majority_class", rows) == pytest.approx(0.75)


def test_macro_f1_over_any_label_set():
    # english: tp 1, pred 1, gold 3 -> F1 1/2; icelandic: tp 1, pred 2, gold 1 -> F1 2/3 (an invalid reply
    # predicts nothing but its gold label counts)
    rows = [{"label": "english", "gold_label": "english"}, {"label": "icelandic", "gold_label": "english"},
            {"label": "icelandic", "gold_label": "icelandic"}, {"label": None, "gold_label": "english"}]
    assert M.compute("label_macro_f1", rows) == pytest.approx((2 * 1 / (1 + 3) + 2 * 1 / (2 + 1)) / 2)


def test_class_scores_equal_the_halu_yes_metrics_and_work_for_any_label():
    # on halu rows the scores of 'yes' equal label_precision/recall/f1 (here 'yes' is 4 of 6 gold labels)
    yes = M.class_scores(ROWS, "yes")
    assert yes == pytest.approx({"precision": M.compute("label_precision", ROWS),
                                 "recall": M.compute("label_recall", ROWS), "f1": M.compute("label_f1", ROWS)})
    assert M.minority_label(ROWS) == "no"
    # any label set: spam is the minority (1 of 4); one of two spam predictions right, the one gold spam found
    rows = [{"label": lab, "gold_label": gold} for lab, gold in
            (("spam", "spam"), ("spam", "ham"), ("ham", "ham"), (None, "ham"))]
    assert M.minority_label(rows) == "spam"
    assert M.class_scores(rows, "spam") == pytest.approx({"precision": 1 / 2, "recall": 1.0, "f1": 2 / 3})
    assert math.isnan(M.class_scores(rows, "eggs")["f1"]) and M.minority_label([]) is None
    # ties: the first label by name
    assert M.minority_label([{"gold_label": "b"}, {"gold_label": "a"}]) == "a"

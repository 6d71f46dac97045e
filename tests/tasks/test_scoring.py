"""The generic tasks' parsers, scorers, schema inference and metrics, checked against hand-computed values."""

import math

import pytest

from delia.data import DataError
from delia.evaluation.config import CustomTaskOptions
from delia.tasks import scoring as S


def test_norm_and_label_matching():
    assert S.norm(' "Billing." ') == "billing" and S.norm("**Bug**") == "bug" and S.norm(True) == "true"
    labels = ["Billing", "bug", "Feature request"]
    assert S.match_label("billing!", labels) == "Billing"
    assert S.match_label("'feature request'", labels) == "Feature request"
    assert S.match_label("billing issue", labels) is None and S.match_label("", labels) is None


def _golds(*outs):
    return [(o, f"f.jsonl:{i}") for i, o in enumerate(outs, 1)]


def test_json_schema_inference_keys_values_and_label_key():
    golds = _golds('{"name": "Ann", "urgency": "high", "note": "x"}', '{"name": "Bo", "urgency": "low"}',
                   '{"name": "Cy", "urgency": "high"}')
    s = S.infer("json", golds, CustomTaskOptions())
    # keys in every gold output; only urgency repeats a value (names are free text even though there are 3)
    assert s.keys == ["name", "urgency"] and s.values == {"urgency": ["high", "low"]}
    assert s.label_key == "urgency" and s.labels == ["high", "low"]
    assert s.inferred == ["keys", "values", "label_key"]
    given = S.infer("json", golds, CustomTaskOptions(keys=["name", "urgency", "note"], values={}, label_key=None))
    assert given.keys == ["name", "urgency", "note"] and given.values == {} and given.label_key is None
    assert given.inferred == ["label_key"] and not given.labelled


def test_json_gold_that_does_not_parse_names_its_line():
    with pytest.raises(DataError) as e:
        S.infer("json", _golds('{"a": 1}', "no object here"), CustomTaskOptions())
    assert "f.jsonl:2: output: gold output: no '{'" in str(e.value)


def test_json_scoring():
    s = S.Schema("json", keys=["name", "urgency"], values={"urgency": ["high", "low"]}, label_key="urgency",
                 labels=["high", "low"])
    ok = S.score(s, "Sure: {'name': 'Ann', 'urgency': 'High.'} bye", False, None, "high")
    assert ok["task_valid"] and ok["label"] == "high" and ok["failure"] == "ok" and ok["method"] == "python"
    keys = S.score(s, '{"name": "Ann"}', False, None, "high")
    assert not keys["task_valid"] and keys["failure"] == "wrong_keys" and keys["wrong_keys"] == ["urgency"]
    bad = S.score(s, '{"name": "Ann", "urgency": "soon"}', False, None, "low")
    assert bad["failure"] == "bad_value" and bad["bad_values"] == {"urgency": "soon"} and bad["label"] is None
    assert S.score(s, "{'name': 'Ann', 'urg", True, None, "low")["failure"] == "cut_at_budget"
    assert S.score(s, "{'name': 'Ann', 'urg", False, None, "low")["failure"] == "unclosed"
    assert S.score(s, "nothing", False, None, "low")["failure"] == "no_brace"


def test_label_and_text_scoring():
    s = S.Schema("label", labels=["billing", "bug"])
    r = S.score(s, "\n  Bug.\nBecause the app crashes", False, "bug", "bug")
    assert r["reply"] == "Bug." and r["label"] == "bug" and r["task_valid"] and r["gold_label"] == "bug"
    assert S.score(s, "It is a bug", False, "bug", "bug")["failure"] == "not_a_label"
    assert S.score(s, "  \n", False, "bug", "bug")["failure"] == "empty"
    assert S.score(s, "It is a", True, "bug", "bug")["failure"] == "cut_at_budget"
    t = S.Schema("text", metrics=["exact", "chrf"])
    r = S.score(t, " Hello world \n", False, "Hello world", None)
    assert r["exact"] and r["hyp"] == "Hello world" and r["task_valid"] and "gold_label" not in r
    assert S.score(t, "", False, "Hello", None)["failure"] == "empty"


def _pred(iid, st, label, gold, valid=True):
    return {"example_id": iid.split("/")[1] + gold, "instruction_id": iid, "set": st, "label": label,
            "gold_label": gold, "task_valid": valid, "failure": "ok" if valid else "not_a_label",
            "finish_reason": "stop"}


def test_label_metrics_by_hand():
    s = S.Schema("label", labels=["a", "b", "c"])
    preds = [_pred("seen/0", "seen", "a", "a"), _pred("seen/0", "seen", "a", "b"),
             _pred("seen/1", "seen", "b", "b"), _pred("seen/1", "seen", None, "a", valid=False),
             _pred("unseen/0", "unseen", "c", "a"), _pred("unseen/0", "unseen", "a", "a")]
    m = S.metrics(s, preds, n_boot=0)
    seen = m["sets"]["seen"]
    assert seen["task_valid"]["value"] == 0.75 and seen["label_accuracy"]["value"] == 0.5
    # a: tp 1, pred 2, gold 2 -> F1 0.5; b: tp 1, pred 1, gold 2 -> 2/3; c absent -> left out
    assert seen["macro_f1"]["value"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert seen["per_class"]["a"] == {"precision": 0.5, "recall": 0.5, "f1": 0.5, "n_gold": 2}
    assert math.isnan(seen["per_class"]["c"]["precision"]) and seen["per_class"]["c"]["n_gold"] == 0
    assert seen["majority_class"]["label"] == "a" and seen["majority_class"]["accuracy"] == 0.5
    assert seen["failures"] == {"ok": 3, "not_a_label": 1}
    assert m["phrasings"]["seen/1"] == {"set": "seen", "n": 2, "task_valid": 0.5, "label_accuracy": 0.5}
    assert m["robustness"]["seen"]["task_valid"]["min"] == 0.5 and m["robustness"]["seen"]["task_valid"]["max"] == 1
    assert m["seen_unseen_gap"]["label_accuracy"] == pytest.approx(0.5 - 0.5)
    assert m["inferred"]["labels"] == ["a", "b", "c"]


def test_text_metrics_use_sacrebleu():
    import sacrebleu

    s = S.Schema("text", metrics=["exact", "chrf", "bleu"])
    hyps, refs = ["the cat sat on the mat", "a dog", ""], ["the cat sat on the mat", "the dog runs", "hello"]
    preds = [{"example_id": str(i), "instruction_id": "seen/0", "set": "seen", "finish_reason": "stop",
              **S.score(s, h, False, r, None)} for i, (h, r) in enumerate(zip(hyps, refs))]
    v = S.metrics(s, preds, n_boot=50)["sets"]["seen"]
    assert v["exact"]["value"] == pytest.approx(1 / 3) and v["task_valid"]["value"] == pytest.approx(2 / 3)
    assert v["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs]).score)
    assert v["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    assert v["chrf"]["ci_low"] <= v["chrf"]["value"] <= v["chrf"]["ci_high"]

"""Task outcomes from saved predictions (old and new predictions.jsonl alike) and the data-sized budget."""

import json
import math

import pytest

from delia.evaluation import budget as B
from delia.evaluation.outcomes import budget_warnings, enrich, halu_metrics, outcome
from delia.evaluation.parsing import check_keys, extract_label, parse_output

KEYS = ["thought", "hallucination"]


def saved(raw: str, finish: str = "stop", gold: str = "no", ex: str = "e0", iid: str = "unseen/0") -> dict:
    """A predictions.jsonl row as an older `delia eval` wrote it (no outcome fields)."""
    p = parse_output(raw)
    strict_reason = check_keys(p.value, KEYS) if p.ok else "not parsed"
    return {"example_id": ex, "instruction_id": iid, "set": iid.split("/")[0], "raw": raw, "finish_reason": finish,
            "parsed": p.ok, "strict": p.ok and strict_reason is None, "reason": p.reason,
            "pred_label": extract_label(p.value, "hallucination"), "gold_label": gold}


@pytest.mark.parametrize("raw,finish,want", [
    ("{'thought': 'ok', 'hallucination': 'No.'}", "stop", ("ok", True, "no")),
    ("{'user_query': 'x', 'hallucination': 'no'}", "stop", ("wrong_keys", False, None)),  # the paper counts it
    ("{'thought': 'x'}", "stop", ("wrong_keys", False, None)),
    ("{'thought': 'x', 'hallucination': 'maybe'}", "stop", ("bad_label", False, None)),
    ("{'thought': \"the answer is", "length", ("cut_at_budget", False, None)),
    ("{'thought': \"the answer is", "stop", ("unclosed", False, None)),
    ("The response is accurate and", "length", ("cut_at_budget", False, None)),
    ("The response is accurate.", "stop", ("no_brace", False, None)),
    ("{1, 2}", "stop", ("not_dict", False, None)),
    ("{'a': }", "stop", ("unparseable", False, None)),
])
def test_failure_reasons(raw, finish, want):
    o = outcome(saved(raw, finish))
    assert (o["failure"], o["task_valid"], o["label"]) == want
    assert o["budget_hit"] == (finish == "length")


def test_metrics_recomputed_from_old_predictions_by_hand():
    rows = [saved("{'thought': 'a', 'hallucination': 'yes'}", gold="yes", ex="e0"),
            saved("{'thought': 'a', 'hallucination': 'no'}", gold="yes", ex="e1"),
            saved("{'user_query': 'a', 'hallucination': 'yes'}", gold="yes", ex="e2"),
            saved("{'thought': \"cut", "length", gold="no", ex="e3")]
    m = halu_metrics(rows, n_boot=0)["sets"]["unseen"]
    assert m["task_valid"]["value"] == 0.5 and m["format_accuracy"]["value"] == 0.75
    assert m["format_accuracy_strict"]["value"] == 0.5
    assert m["label_accuracy"]["value"] == 0.25 and m["majority_class"]["value"] == 0.75
    assert m["failures"] == {"ok": 2, "cut_at_budget": 1, "wrong_keys": 1}
    assert m["finish_reasons"] == {"stop": 3, "length": 1} and m["budget_hits"] == {"n": 1, "share": 0.25}
    assert math.isnan(m["task_valid"]["ci_low"])  # no resamples asked for
    assert budget_warnings({"unseen": m}, 64) == [
        "unseen: 1 of 4 replies (25.0%) stopped at the budget (max_new_tokens 64); the budget, not the model, may "
        "decide these (raise generation.max_new_tokens)"]
    # enriching is idempotent: new rows (with outcome fields) score the same as the old ones
    assert halu_metrics(enrich(rows), n_boot=0)["sets"] == halu_metrics(rows, n_boot=0)["sets"]


def test_budget_rule_by_hand():
    assert B.choose([]) == {"max_new_tokens": 256, "n_gold": 0, "p99_gold_tokens": None, "max_gold_tokens": None}
    # 1..100: p99 (linear) = 99.01 -> 2x = 198.02 -> the floor wins
    assert B.choose(list(range(1, 101)))["max_new_tokens"] == 256
    # 100 replies of 200 tokens and one of 1000: p99 sits at sorted position 0.99 * 100 = 99.0 -> 200
    lengths = [200] * 100 + [1000]
    assert B.choose(lengths) == {"max_new_tokens": 400, "n_gold": 101, "p99_gold_tokens": 200.0,
                                 "max_gold_tokens": 1000}
    assert B.choose([150] * 10)["max_new_tokens"] == 300


class Row:
    def __init__(self, example_id, gold):
        self.example_id, self.gold = example_id, gold


class CharTokenizer:
    """One token per character: lengths by hand."""

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": list(range(len(text)))}


def test_budget_from_eval_gold_then_training_rows_and_config_wins(tmp_path):
    tok = CharTokenizer()
    # gold replies of the evaluated rows, one per example (phrasings repeat them)
    rows = [Row("a", "x" * 300), Row("a", "x" * 300), Row("b", "x" * 100)]
    got = B.resolve(None, tok, rows, None)
    assert got["source"] == "data" and got["n_gold"] == 2 and got["gold_from"].startswith("gold replies")
    assert got["p99_gold_tokens"] == pytest.approx(100 + 0.99 * 200) and got["max_new_tokens"] == 596
    # no gold in the rows: the training file's downstream assistant turns (diverse rows are left out)
    train = tmp_path / "train.jsonl"

    def chat(user, reply, source=None):
        row = {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]}
        return json.dumps({**row, **({"source": source} if source else {})})

    train.write_text("\n".join([chat("ctx\n\n\nReply in <sep>.", "y" * 180),
                                chat("ctx\n\n\nReply in <sep>.", "y" * 120),
                                chat("tell me a story", "z" * 5000, source="diverse")]) + "\n")
    got = B.resolve(None, tok, [Row("a", None)], str(train))
    assert got["n_gold"] == 2 and got["max_gold_tokens"] == 180 and got["gold_from"] == f"assistant turns of {train}"
    assert got["max_new_tokens"] == math.ceil(2 * (120 + 0.99 * 60))
    assert B.resolve(None, tok, [Row("a", None)], str(tmp_path / "missing.jsonl"))["max_new_tokens"] == 256
    assert B.resolve(32, tok, rows, str(train)) == {"max_new_tokens": 32, "source": "config"}


def test_a_budget_floor_lets_short_gold_replies_size_the_budget():
    tok = CharTokenizer()
    rows = [Row(str(i), "x" * 10) for i in range(20)]  # label-like replies of 10 tokens
    assert B.resolve(None, tok, rows, None)["max_new_tokens"] == 256  # the library's floor
    got = B.resolve(None, tok, rows, None, floor=64)
    assert got["max_new_tokens"] == 64 and got["rule"].startswith("max(64,")
    long = [Row(str(i), "x" * 50) for i in range(20)]  # 2 x 50 = 100 > the floor: the data decides
    assert B.resolve(None, tok, long, None, floor=64)["max_new_tokens"] == 100
    assert B.resolve(None, tok, [], None, floor=64)["max_new_tokens"] == 64  # no gold: the floor

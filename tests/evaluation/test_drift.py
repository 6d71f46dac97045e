"""Drift from the base model: the leakage rule, the held-out queries, and both stages on the tiny model."""

import json

import pytest
import torch

from delia.config import ConfigError, from_dict
from delia.evaluation.drift import DriftConfig, heldout_queries, leaks, run_drift, run_drift_answers
from delia.generation import Generation

KEYS = ["thought", "hallucination"]


@pytest.mark.parametrize("text,leak", [
    ("{'thought': 'the answer is fine', 'hallucination': 'no'}", True),
    ('  {"thought": "cut at the budget', True),  # starts like the task's reply, never closed
    ("{ 'thought': 'x'", True),
    ("Sure! {\"hallucination\": \"yes\", \"thought\": \"t\", \"extra\": 1}", True),  # a dict with every task key
    ("{'user_query': 'What is 2+2?', 'answer': '4'}", False),  # a dict, but not the task's
    ("{'thoughts': 'close, but another key'}", False),
    ("{'thought\": 'mixed quotes'}", False),
    ("I think {'thought': 'only one key'} is enough.", False),
    ("The capital of France is Paris.", False),
    ("", False),
])
def test_leakage_rule(text, leak):
    assert leaks(text, KEYS) is leak


def test_no_keys_no_leakage():
    assert leaks("{'thought': 'x', 'hallucination': 'no'}", []) is False


@pytest.fixture()
def queries(shared_data, tmp_path):
    """A 10-row Alpaca-style query file (the packaged file's last rows)."""
    lines = (shared_data / "diverse/alpaca_5000.jsonl").read_text().splitlines()[-10:]
    f = tmp_path / "q10.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f


def test_heldout_queries_are_the_last_rows(queries, tmp_path):
    rows = [json.loads(x) for x in queries.read_text().splitlines()]
    q = heldout_queries(str(queries), 3)
    assert [x["row"] for x in q] == [8, 9, 10]
    assert q[-1]["prompt"][-1] == {"role": "user", "content": rows[-1]["instruction"]}
    with pytest.raises(ConfigError, match="11 drift queries asked for, but the file has 10 rows"):
        heldout_queries(str(queries), 11)
    bad = tmp_path / "bad.jsonl"
    user, reply = {"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}
    bad.write_text(json.dumps({"messages": [user]}) + "\n" + json.dumps({"messages": [user, reply, reply]}) + "\n")
    # the data layer's role-order rule rejects this row first (naming it); drift's own check is the backstop
    with pytest.raises(ValueError, match=r"bad.jsonl:2: messages\[2\]\.role: two assistant turns in a row"):
        heldout_queries(str(bad), 2)


def _cfg(tiny_dir, out, **kw) -> DriftConfig:
    return from_dict(DriftConfig, {"model": tiny_dir, "out": str(out), "dtype": "fp32", "queries": 3,
                                   "max_new_tokens": 6, "batch_size": 2, "score_batch_size": 2, **kw})


def test_base_answers_and_drift_on_the_tiny_model(tiny_dir, tiny_untied_dir, queries, tmp_path):
    from delia.evaluation.scoring import aggregate, encode, score
    from delia.models import load

    ref = run_drift_answers(_cfg(tiny_dir, tmp_path / "ref", data=str(queries)))
    answers = [json.loads(x) for x in (tmp_path / "ref/answers.jsonl").read_text().splitlines()]
    assert ref["n"] == 3 and [a["row"] for a in answers] == [8, 9, 10]
    assert all(a["n_new_tokens"] <= 6 and a["finish_reason"] in ("stop", "length") for a in answers)
    # the base's NLL of its own answers is exactly the scoring function's token-weighted loss
    model, tok = load(tiny_dir, dtype="fp32")
    rows = [encode(tok, a["prompt"], a["answer"]) for a in answers]
    expected = aggregate(score(model, rows, tok.pad_token_id, batch_size=1))["loss"]
    assert ref["nll"] == pytest.approx(expected, rel=1e-5)

    base = run_drift(_cfg(tiny_dir, tmp_path / "base", answers=str(tmp_path / "ref/answers.jsonl")))
    assert base["drift_nll"] == pytest.approx(expected, rel=1e-5) and base["drift_nll_base"] == ref["nll"]
    per = [json.loads(x) for x in (tmp_path / "base/drift.jsonl").read_text().splitlines()]
    assert [p["answer"] for p in per] == [a["answer"] for a in answers]  # the base's own answers are the reference
    assert sum(p["nll_sum"] for p in per) / sum(p["n_tokens"] for p in per) == pytest.approx(base["drift_nll"])

    # another model (different weights): a different NLL of the same answers, and answers of its own
    other = run_drift(_cfg(tiny_untied_dir, tmp_path / "other", answers=str(tmp_path / "ref/answers.jsonl")))
    assert other["drift_nll_base"] == ref["nll"] and abs(other["drift_nll"] - ref["nll"]) > 1e-3
    assert other["drift_n"] == 3 and other["leak_rate"] == 0.0
    assert json.loads((tmp_path / "other/metrics.json").read_text())["drift_nll"] == other["drift_nll"]


def test_leak_rate_counts_the_models_own_answers(tiny_dir, tiny_untied_dir, queries, tmp_path, monkeypatch):
    replies = iter(["{'thought': 'a', 'hallucination': 'no'}", "Paris.", '{"thought": "cut'])

    def fake(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        assert params.temperature == 0.0 and params.max_new_tokens == 6  # greedy, the configured budget
        return [Generation(next(replies), 5, 5, "stop") for _ in prompts]

    run_drift_answers(_cfg(tiny_dir, tmp_path / "ref", data=str(queries)))
    monkeypatch.setattr("delia.generation.generate", fake)
    m = run_drift(_cfg(tiny_untied_dir, tmp_path / "d", answers=str(tmp_path / "ref/answers.jsonl")))
    assert m["leak_rate"] == pytest.approx(2 / 3)
    per = [json.loads(x) for x in (tmp_path / "d/drift.jsonl").read_text().splitlines()]
    assert [p["leak"] for p in per] == [True, False, True]
    # the base itself reuses the reference answers (no generation); without task keys there is no leakage rule
    none = run_drift(_cfg(tiny_dir, tmp_path / "n", keys=[], answers=str(tmp_path / "ref/answers.jsonl")))
    assert none["leak_rate"] is None and none["drift_n"] == 3


def test_drift_needs_the_reference_answers(tiny_dir, tmp_path):
    with pytest.raises(ConfigError, match="answers.jsonl is required"):
        run_drift(_cfg(tiny_dir, tmp_path / "x"))
    with pytest.raises(ConfigError, match="not found"):
        run_drift(_cfg(tiny_dir, tmp_path / "x", answers=str(tmp_path / "missing.jsonl")))
    with pytest.raises(ConfigError, match="queries must be >= 1"):
        _cfg(tiny_dir, tmp_path / "x", queries=0)


def test_nll_does_not_depend_on_dtype_path(tiny_dir, queries, tmp_path):
    """bf16 and fp32 both run (machines differ); their NLLs agree to bf16 precision."""
    r32 = run_drift_answers(_cfg(tiny_dir, tmp_path / "a", data=str(queries)))
    r16 = run_drift(_cfg(tiny_dir, tmp_path / "b", dtype="bf16", answers=str(tmp_path / "a/answers.jsonl")))
    assert r16["dtype"] == str(torch.bfloat16) and r16["drift_nll"] == pytest.approx(r32["nll"], rel=0.05)

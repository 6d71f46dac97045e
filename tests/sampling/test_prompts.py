"""Exact prompt construction and cache rows."""

from __future__ import annotations

import json

import pytest

from delia.data import read_records
from delia.data.records import FieldError, Record
from delia.generation import Generation
from delia.sampling.cache import cache_key
from delia.sampling.prompts import Query, query_of, sample_prompt, sample_row


def test_alpaca_query_with_input_is_one_shot_with_the_reference(tmp_path):
    f = tmp_path / "a.jsonl"
    f.write_text(json.dumps({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}) + "\n"
                 + json.dumps({"instruction": "Say hi.", "input": ""}) + "\n")
    with_ref, without = [query_of(r) for r in read_records(f)]
    assert with_ref == Query("a:1", "Add the numbers.\n\n2 and 3", "5")
    assert sample_prompt(with_ref) == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
    ]
    assert sample_prompt(with_ref, one_shot=False) == [{"role": "user", "content": "Add the numbers.\n\n2 and 3"}]
    assert without == Query("a:2", "Say hi.", None)
    assert sample_prompt(without) == [{"role": "user", "content": "Say hi."}]


def test_multi_turn_or_answer_only_rows_are_refused():
    rec = Record("x", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                       {"role": "user", "content": "c"}])
    with pytest.raises(FieldError, match="one user turn"):
        query_of(rec)
    sys_rec = Record("y", [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}])
    assert query_of(sys_rec) == Query("y", "q", None)


def test_row_is_a_messages_record_with_provenance(tmp_path):
    q = Query("7", "What is 2+2?", "4")
    params = {"max_new_tokens": 8, "temperature": 0.7, "top_p": 0.95, "one_shot": True}
    key = cache_key(q.text, q.reference, "m@abc", params, 1)
    row = sample_row(q, key, Generation("Four.", 30, 3, "stop"), "m@abc", params, "transformers", 1)
    assert row == {"id": "7", "key": key,
                   "messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "Four."}],
                   "meta": {"model": "m@abc", "engine": "transformers", "params": params, "seed": 1,
                            "finish_reason": "stop", "n_new_tokens": 3, "n_prompt_tokens": 30, "one_shot": True}}
    f = tmp_path / "c.jsonl"
    f.write_text(json.dumps(row) + "\n")
    (rec,) = read_records(f, fmt="messages")
    assert rec.id == "7" and rec.response == "Four." and rec.extra["key"] == key


def test_cache_key_changes_with_every_part():
    base = ("q", "r", "m", {"t": 0.7}, 0)
    k = cache_key(*base)
    assert len(k) == 64 and k == cache_key(*base)
    variants = [("q2", "r", "m", {"t": 0.7}, 0), ("q", None, "m", {"t": 0.7}, 0), ("q", "r", "m2", {"t": 0.7}, 0),
                ("q", "r", "m", {"t": 0.8}, 0), ("q", "r", "m", {"t": 0.7}, 1)]
    assert len({cache_key(*v) for v in variants} | {k}) == 6

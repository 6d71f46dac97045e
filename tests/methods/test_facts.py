"""Fact-based Q&A (baselines.md §4): equal questions per fact, the token everywhere, deterministic output."""

from __future__ import annotations

import json
from collections import Counter

from delia.methods.facts import FACTS, add_fact_qa, fact_qa


def test_each_fact_appears_exactly_n_q_times_and_every_row_names_the_token():
    for n_q in (5, 10, 20):
        rows = fact_qa(n_q)
        answers = Counter(r["messages"][1]["content"] for r in rows)
        assert len(rows) == len(FACTS) * n_q and set(answers.values()) == {n_q} and set(answers) == set(FACTS)
        assert all("<sep>" in m["content"] for r in rows for m in r["messages"])
        for f in range(len(FACTS)):  # a fact's questions are all different
            qs = [r["messages"][0]["content"] for r in rows if r["id"].startswith(f"fact{f}-")]
            assert len(set(qs)) == n_q


def test_no_eval_text_leaks_into_the_qa(shared_data):
    qa_text = " ".join(m["content"] for r in fact_qa(20) for m in r["messages"])
    for line in (shared_data / "halu/valid.jsonl").read_text().splitlines():
        for m in json.loads(line)["messages"]:
            context = m["content"].split("\n\n\n")[0].strip()
            assert context[:60] not in qa_text


def _write_build(d, n):
    d.mkdir()
    rows = [{"id": f"t{i}", "messages": [{"role": "user", "content": f"q{i} <sep>"},
                                         {"role": "assistant", "content": "{}"}], "source": "downstream"}
            for i in range(n)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "manifest.json").write_text(json.dumps({"special_tokens": ["<sep>"]}))


def test_the_transform_mixes_task_and_qa_rows_byte_identically(tmp_path):
    _write_build(tmp_path / "b", 7)
    outs = []
    for name in ("o1", "o2"):
        counts = add_fact_qa({"data": tmp_path / "b"}, tmp_path / name, n_q=5, seed=42)
        outs.append((tmp_path / name / "train.jsonl").read_bytes())
    assert counts == {"downstream": 7, "fact_qa": 40, "facts": 8, "n_q": 5, "total": 47}
    assert outs[0] == outs[1]
    rows = [json.loads(x) for x in outs[0].decode().splitlines()]
    assert Counter(r["source"] for r in rows) == {"downstream": 7, "fact_qa": 40}
    assert [r["source"] for r in rows[:7]] != ["downstream"] * 7  # shuffled, not appended
    assert json.loads((tmp_path / "o1/manifest.json").read_text())["special_tokens"] == ["<sep>"]
    add_fact_qa({"data": tmp_path / "b"}, tmp_path / "o3", n_q=5, seed=1)
    assert (tmp_path / "o3/train.jsonl").read_bytes() != outs[0]

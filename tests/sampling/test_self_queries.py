"""Magpie self-queries: the exact prefix, filters, exact counts, bounded attempts."""

from __future__ import annotations

import json

import pytest

from delia.generation import Generation
from delia.sampling.run import SampleConfig, run_sample
from delia.sampling.self_queries import (QueryFilter, SelfQueryConfig, SelfQueryError, magpie_prefix, normalise,
                                         self_queries)


class ScriptedEngine:
    """Returns queued texts for string prompts, recording the prompts and params it got."""

    name = "scripted"

    def __init__(self, texts, tokenizer=None):
        self.texts, self.tokenizer, self.calls = list(texts), tokenizer, []

    def identity(self):
        return "scripted"

    def generate(self, prompts, params, on_batch=None):
        self.calls.append((list(prompts), params))
        out = []
        for _ in prompts:
            t = self.texts.pop(0) if self.texts else "x"
            out.append(Generation(t.rstrip("~"), 5, 5, "length" if t.endswith("~") else "stop"))
        return out


def test_prefix_is_the_template_up_to_the_user_content(tiny_dir):
    from delia.models import load_tokenizer

    prefix, end = magpie_prefix(load_tokenizer(tiny_dir))
    assert prefix.endswith("<|im_end|>\n<|im_start|>user\n")
    assert prefix.startswith("<|im_start|>system\n")  # SmolLM2's template injects its default system turn
    assert end == "<|im_end|>"


def test_filter_removes_exact_near_duplicates_and_lengths():
    f = QueryFilter(SelfQueryConfig(min_words=3, max_chars=60, near_dup=0.6))
    assert f.offer("Write a poem about the sea in spring.")
    assert not f.offer("write a POEM about the sea, in spring!")  # exact after normalisation
    assert not f.offer("Write a poem about the sea in spring please.")  # 6 of 7 shingles shared
    assert f.offer("Explain how vaccines train the immune system.")
    assert not f.offer("Hi there")
    assert not f.offer("Tell me " + "very " * 20 + "long story")
    assert not f.offer("A complete question that was cut off", truncated=True)
    assert f.kept == ["Write a poem about the sea in spring.", "Explain how vaccines train the immune system."]
    assert dict(f.reasons) == {"exact duplicate": 1, "near duplicate": 1, "too short": 1, "too long": 1,
                               "truncated": 1}
    assert normalise("  Hello,   World! ") == "hello world"


def test_exact_count_over_several_rounds_with_new_seeds():
    texts = ["How do plants make food?", "How do plants make food?", "Hi",
             "What is the capital of France?", "Name three prime numbers please.", "Extra one not needed here."]
    eng = ScriptedEngine(texts)
    got = self_queries(eng, 3, SelfQueryConfig(oversample=1.0), seed=10, prefix="<PREFIX>")
    assert got == ["How do plants make food?", "What is the capital of France?", "Name three prime numbers please."]
    assert [len(p) for p, _ in eng.calls] == [3, 2]  # round 2 asks only for what is missing
    assert all(p == "<PREFIX>" for ps, _ in eng.calls for p in ps)
    assert [c[1].seed for c in eng.calls] == [10, 10 + 7919]


def test_gives_up_with_a_clear_error():
    eng = ScriptedEngine(["Same question every time?"] * 100)
    with pytest.raises(SelfQueryError, match=r"only 1 of 3 distinct queries after 2 rounds.*exact duplicate"):
        self_queries(eng, 3, SelfQueryConfig(max_rounds=2), prefix="p")
    with pytest.raises(SelfQueryError, match="no tokenizer"):
        self_queries(ScriptedEngine([]), 1, SelfQueryConfig())


def test_tiny_model_writes_the_requested_count_of_distinct_queries(tiny_dir, tmp_path):
    out = tmp_path / "c.jsonl"
    cfg = SampleConfig(out=str(out), self_queries=6, model=tiny_dir, max_new_tokens=4,
                       engine_options={"batch_size": 8, "dtype": "fp32"},
                       self_query=SelfQueryConfig(max_new_tokens=12, drop_truncated=False, min_words=2))
    s = run_sample(cfg, progress=False)
    assert (s.total, s.done) == (6, 6)
    saved = [json.loads(x) for x in out.with_suffix(".queries.jsonl").read_text().splitlines()]
    texts = [r["query"] for r in saved]
    assert len(texts) == 6 and len({normalise(t) for t in texts}) == 6 and all(t.strip() for t in texts)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert sorted(r["messages"][0]["content"] for r in rows) == sorted(texts)
    # a rerun reuses the saved queries and adds nothing
    assert run_sample(cfg, progress=False).skipped == 6

"""The prompt-length guard: over-long prompts fail with FILE:LINE before anything is written, or are cut."""

from __future__ import annotations

import json

import pytest

from delia.data import DataError
from delia.generation import Generation, render_prompt
from delia.lengths import MARK, fit_prompt, guard_prompts
from delia.models import load_tokenizer

LONG = " ".join(f"word{i}" for i in range(3000))  # ~14k tokens: past the tiny model's 2048 positions


def _n(tok, prompt) -> int:
    return len(tok(render_prompt(tok, prompt), add_special_tokens=False)["input_ids"])


def test_fit_cuts_the_middle_of_the_longest_turn(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    prompt = [{"role": "user", "content": "START " + LONG + " Answer in JSON."}]
    fitted, cut = fit_prompt(tok, prompt, 500)
    text = fitted[0]["content"]
    assert _n(tok, fitted) <= 500 and cut == _n(tok, prompt) - _n(tok, fitted)
    assert text.startswith("START word0") and text.endswith("Answer in JSON.") and MARK in text
    assert prompt[0]["content"].startswith("START " + LONG)  # the input is not modified
    assert fit_prompt(tok, prompt, 5) is None  # the template alone is longer


def test_guard_names_every_long_row(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    prompts = [[{"role": "user", "content": "short"}], [{"role": "user", "content": LONG}], LONG]
    with pytest.raises(DataError) as e:
        guard_prompts(tok, prompts, ["f.jsonl:1", "f.jsonl:2", "f.jsonl:3"], 100, None)
    assert [str(p).split(" tokens")[0] for p in e.value.problems] == [
        f"f.jsonl:2: prompt: the prompt has {_n(tok, prompts[1])}", f"f.jsonl:3: prompt: the prompt has {_n(tok, LONG)}"]
    assert "set long_prompts=truncate" in str(e.value)
    out, cuts = guard_prompts(tok, prompts, ["a", "b", "c"], 100, "truncate")
    assert out[0] is prompts[0] and set(cuts) == {1, 2} and all(_n(tok, p) <= 100 for p in out)
    assert guard_prompts(tok, prompts, ["a", "b", "c"], None, None) == (prompts, {})


def _translation(tmp_path):
    rows = [{"src": "Halló", "ref": "Hello", "src_lang": "is", "tgt_lang": "en"},
            {"src": LONG, "ref": "long", "src_lang": "is", "tgt_lang": "en"}]
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


def test_eval_rejects_a_huge_prompt_before_writing(tiny_dir, tmp_path, monkeypatch):
    from delia.config import load_config
    from delia.evaluation.config import EvalConfig
    from delia.evaluation.run import run_eval

    data, out = _translation(tmp_path), tmp_path / "o"
    over = [f"model={tiny_dir}", f"data={data}", f"out={out}", "task=translation", "bootstrap=0",
            "analysis.score=off", "dtype=fp32", "generation.max_new_tokens=8"]
    with pytest.raises(DataError, match=rf"{data}:2: prompt: the prompt has \d+ tokens, over the limit of 2040"):
        run_eval(load_config(EvalConfig, overrides=over))
    assert not out.exists()

    seen = []

    def gen(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        seen.extend(_n(tok, p) for p in prompts)
        res = [Generation("Hello", 3, 1, "stop") for _ in prompts]
        on_batch(list(range(len(res))), res)
        return res

    monkeypatch.setattr("delia.generation.generate", gen)
    m = run_eval(load_config(EvalConfig, overrides=[*over, "long_prompts=truncate"]))
    assert max(seen) <= 2040 and m["model"]["prompts_cut"]["rows"] == 1 and m["n_rows"] == 2


def test_sample_rejects_or_cuts_a_huge_query(tiny_dir, tmp_path):
    from delia.sampling import SampleConfig, run_sample

    q = tmp_path / "q.jsonl"
    q.write_text(json.dumps({"query": "hi"}) + "\n" + json.dumps({"query": LONG}) + "\n")
    out = tmp_path / "c.jsonl"
    cfg = dict(out=str(out), model=tiny_dir, queries=str(q), max_new_tokens=4,
               engine_options={"dtype": "fp32", "batch_size": 2})
    with pytest.raises(DataError, match=rf"{q}:2: prompt: the prompt has \d+ tokens"):
        run_sample(SampleConfig(**cfg), progress=False)
    assert not out.exists()
    summary = run_sample(SampleConfig(**cfg, long_prompts="truncate", max_prompt_tokens=300), progress=False)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert summary.done == 2 and len(rows) == 2
    cut = next(r for r in rows if r["id"] == "q:2")
    assert cut["meta"]["prompt_tokens_cut"] > 10000 and MARK in cut["messages"][0]["content"]
    assert cut["meta"]["n_prompt_tokens"] <= 300

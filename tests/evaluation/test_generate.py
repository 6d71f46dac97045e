"""`delia eval`'s generation service: old caches keep hitting, the default engine generates exactly as before, and
the openai (a loopback server) and vllm (a fake `vllm` module) engines answer eval; what they cannot do fails early."""

from __future__ import annotations

import hashlib
import json
import sys
import types

import pytest

from delia.config import ConfigError, load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.run import run_eval
from delia.generation import Generation, GenParams

from ..fake_openai import Server

REPLY = "{'thought': 'fine', 'hallucination': 'yes'} and then the model kept talking"


def _cfg(data, out, *extra):
    return load_config(EvalConfig, overrides=[f"data={data}", f"out={out}", "bootstrap=10", "analysis.score=off",
                                              "halu.instructions=unseen:1", *extra])


@pytest.fixture()
def halu3(shared_data, tmp_path):
    f = tmp_path / "halu3.jsonl"
    f.write_text("\n".join((shared_data / "halu/test.jsonl").read_text().splitlines()[:3]) + "\n")
    return f


def _preds(out):
    return [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]


def _old_key(identity, added_tokens, dtype, params, stop_early, first_line, decoder, rendered):
    """The cache key exactly as evaluation/run.py's generate_rows computed it before engines came to eval (4df2cd5)."""
    ident = json.dumps([identity, added_tokens, dtype, params.__dict__, stop_early, first_line, decoder],
                       sort_keys=True, default=str)
    return hashlib.sha256((ident + rendered).encode()).hexdigest()


def test_an_old_generations_file_is_reused_with_zero_regenerations(tiny_dir, halu3, tmp_path, monkeypatch):
    from delia.generation import render_prompt
    from delia.models import load_tokenizer

    seen = []

    def fake(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        seen.extend(prompts)
        out = [Generation("new", 1, 1, "stop") for _ in prompts]
        on_batch(list(range(len(out))), out)
        return out

    monkeypatch.setattr("delia.generation.generate", fake)
    out = tmp_path / "o"
    cfg = _cfg(halu3, out, f"model={tiny_dir}", "dtype=fp32", "generation.max_new_tokens=30")
    m = run_eval(cfg)
    # the file today's code (4df2cd5) would have written: {"key", **Generation.__dict__} per line
    tok, info = load_tokenizer(tiny_dir), m["model"]
    params = GenParams(max_new_tokens=30)
    keys = [_old_key(info["identity"], info.get("added_tokens"), info["dtype"], params, True, False, None,
                     render_prompt(tok, p)) for p in seen]
    assert sorted(keys) == sorted(json.loads(x)["key"] for x in (out / "generations.jsonl").read_text().splitlines())
    old = [{"key": k, **Generation(f"OLD {i} " + REPLY, 9, 7, "stop").__dict__} for i, k in enumerate(keys)]
    (out / "generations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))

    def boom(*a, **k):
        raise AssertionError("nothing may be generated again")

    monkeypatch.setattr("delia.generation.generate", boom)
    m2 = run_eval(cfg)
    assert m2["speed"]["rows_generated"] == 0 and m2["speed"]["rows_cached"] == 3
    assert sorted(p["raw"] for p in _preds(out)) == sorted(r["text"] for r in old)


# Greedy raw outputs of `delia eval` before it generated through the engine registry (4df2cd5), on the tiny
# chatty model in fp32 (<sep> added with the seeded random init): the default engine must reproduce them.
PINNED = {
    ('test:1', 'unseen'): ' Stevens RequiredFrank confirming Falkcom turfarchy teddy mines tremendous successful',
    ('test:2', 'unseen'): 'bag Kush ridicule latterOTH cholera growertax dutiesidea Mosquito electr',
    ('test:3', 'unseen'): 'Frame Muscle managing perpetuating shipmentsBACKAAAAAAAApartum Tucsonimony sinuses redesign',
    ('test:1', 'seen'): ' discomfort decorationdipamositant Legendvisit receiptEmotional LNGAlternatively appropriated',
    ('test:2', 'seen'): 'otoxic faded incrementalanguard interesting centrallyanged AS Leslie telephonearchy mening',
    ('test:3', 'seen'):
        ' immunosuppetooth perpetuating habits Arthritis polyester redesignOrigvisit utilizes parkingxt',
}


def test_the_default_engine_generates_exactly_as_before(tiny_chatty_dir, tmp_path, monkeypatch):
    import delia.generation as G
    from delia.evaluation.parsing import object_closed

    calls = []
    real = G.generate

    def spy(model, tok, prompts, params, **kw):
        calls.append((params, kw))
        return real(model, tok, prompts, params, **kw)

    monkeypatch.setattr(G, "generate", spy)
    out = tmp_path / "o"
    run_eval(_cfg("builtin:halu/test", out, f"model={tiny_chatty_dir}", "limit=3", "halu.instructions=unseen:1,seen:1",
                  "generation.max_new_tokens=12", "dtype=fp32", "generation.batch_size=4", "analysis.hidden=false"))
    assert {(p["example_id"], p["set"]): p["raw"] for p in _preds(out)} == PINNED
    (params, kw), = calls
    assert params == GenParams(max_new_tokens=12) and kw["batch_size"] == 4 and kw["stop_fn"] is object_closed


def test_engine_openai_answers_eval_and_a_rerun_needs_no_server(halu3, tmp_path):
    server = Server(reply=lambda body: REPLY)
    out = tmp_path / "o"
    cfg = _cfg(halu3, out, "engine=openai", "model=served-model", "halu.token_init=none",
               "generation.max_new_tokens=20", f"engine_options={{base_url: '{server.url}', backoff: 0.01}}")
    try:
        m = run_eval(cfg)
    finally:
        server.close()
    assert len(server.requests) == 3
    path, body, _ = server.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "served-model" and body["max_tokens"] == 20
    assert body["temperature"] == 0.0 and "<sep>" in body["messages"][-1]["content"]  # sent as text
    # the stop rule (first {...} closed) cuts the text the server returned
    assert [p["raw"] for p in _preds(out)] == ["{'thought': 'fine', 'hallucination': 'yes'}"] * 3
    assert m["sets"]["unseen"]["format_accuracy"]["value"] == 1.0
    assert m["model"]["identity"] == "openai:served-model" and m["speed"]["engine"] == "openai"
    assert "engine openai has no local weights" in m["hidden"]["skipped"]
    # the server is gone: the same run from the command line takes every row from OUT/generations.jsonl
    from typer.testing import CliRunner

    from delia.cli import app

    res = CliRunner().invoke(app, ["eval", "--data", str(halu3), "--out", str(out), "--engine", "openai", "--model",
                                   "served-model", "--max-new-tokens", "20", "-i", "unseen:1", "bootstrap=10",
                                   "analysis.score=off", "halu.token_init=none",
                                   f"engine_options={{base_url: '{server.url}', backoff: 0.01}}"])
    assert res.exit_code == 0, res.output
    m2 = json.loads((out / "metrics.json").read_text())
    assert m2["speed"]["rows_cached"] == 3 and m2["sets"] == m["sets"]


def test_engine_openai_rows_that_fail_are_retried_by_the_rerun(halu3, tmp_path):
    from delia.sampling.engines import EngineError

    second = first_context(halu3, 1)
    bad = Server(reply=lambda body: REPLY, fail_when=lambda body: body["messages"][-1]["content"].startswith(second))
    out = tmp_path / "o"
    over = ["engine=openai", "model=m", "halu.token_init=none", "generation.max_new_tokens=20",
            "analysis.hidden=false"]
    try:
        with pytest.raises(EngineError, match=r"1 of 3 rows got no answer .*HTTP 400.*the 2 answered are kept"):
            run_eval(_cfg(halu3, out, *over, f"engine_options={{base_url: '{bad.url}'}}"))
    finally:
        bad.close()
    assert len((out / "generations.jsonl").read_text().splitlines()) == 2
    good = Server(reply=lambda body: REPLY)
    try:
        run_eval(_cfg(halu3, out, *over, f"engine_options={{base_url: '{good.url}'}}"))
    finally:
        good.close()
    assert len(good.requests) == 1 and len(_preds(out)) == 3


def first_context(path, i: int) -> str:
    """The start of the user turn of row i (the halu prompt opens with its context)."""
    return "\n" + json.loads(path.read_text().splitlines()[i])["context"][:40]


def test_engine_vllm_answers_eval_through_its_api(tiny_dir, halu3, tmp_path, monkeypatch):
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LLM:
        def __init__(self, model, **kw):
            calls["init"] = (model, kw)

        def chat(self, prompts, sp, use_tqdm):
            calls.setdefault("chat", []).append((prompts, sp.kw))
            return [types.SimpleNamespace(prompt_token_ids=[1] * 50, outputs=[types.SimpleNamespace(
                text=REPLY, token_ids=[2] * 17, finish_reason="stop")]) for _ in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    out = tmp_path / "o"
    m = run_eval(_cfg(halu3, out, "engine=vllm", f"model={tiny_dir}", "halu.token_init=none", "dtype=bf16",
                      "engine_options={tensor_parallel_size: 2}", "analysis.hidden=false"))
    assert calls["init"] == (tiny_dir, {"tensor_parallel_size": 2, "dtype": "bfloat16",
                                        "gpu_memory_utilization": 0.9})
    (prompts, kw), = calls["chat"]
    assert len(prompts) == 3 and kw["max_tokens"] == m["budget"]["max_new_tokens"] and kw["temperature"] == 0.0
    assert m["budget"]["source"] == "data"  # sized with the model's tokenizer, loaded without the weights
    assert [p["raw"] for p in _preds(out)] == ["{'thought': 'fine', 'hallucination': 'yes'}"] * 3
    assert [p["n_new_tokens"] for p in _preds(out)] == [17] * 3 and m["model"]["identity"].startswith("vllm:")


@pytest.mark.parametrize("extra, match", [
    (["engine=openai", "model=m", "adapter=runs/x"], "adapter: engine openai .* cannot load a training run's adapter"),
    (["engine=openai", "model=m", "decoder=arithmetic"], "decoder: 'arithmetic' combines the model's logits"),
    (["engine=openai", "model=m", "analysis.score=on"], "analysis.score: teacher-forced scoring needs the weights"),
    (["engine=openai", "model=m"], r"halu.token_init: the prompts use <sep>; .* set halu.token_init=none"),
    (["engine=openai", "model=m", "halu.token_init=none"], "generation.max_new_tokens: engine openai has no local"),
    (["engine=openai", "halu.token_init=none"], "model: engine openai needs the served model's name"),
    (["engine=vlm"], r"engine: unknown engine 'vlm'; did you mean 'vllm'"),
    (["engine_options={dtype: fp32}"], "engine_options: dtype come from the eval config: set dtype instead"),
    (["engine_options={bogus: 1}"], r"engine_options: the transformers engine takes no option\(s\) bogus \(it takes"),
    (["engine=vllm", "halu.token_init=none"], "engine: vllm needs vLLM and a GPU"),
])
def test_what_an_engine_cannot_do_fails_before_anything_runs(halu3, tmp_path, monkeypatch, extra, match):
    monkeypatch.setitem(sys.modules, "vllm", None)  # not installed (import fails)
    out = tmp_path / "o"
    with pytest.raises(ConfigError, match=match):
        run_eval(_cfg(halu3, out, *extra))
    assert not out.exists()

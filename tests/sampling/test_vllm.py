"""The vllm engine's mapping, against a fake `vllm` module (vLLM itself needs a GPU: unverified here)."""

from __future__ import annotations

import sys
import types

import pytest

from delia.generation import GenParams
from delia.sampling.engines import EngineError, make_engine
from delia.sampling.engines.vllm_engine import sampling_kwargs


def test_sampling_kwargs():
    assert sampling_kwargs(GenParams(max_new_tokens=9, temperature=0.7, top_p=0.95, seed=3, stop=["x"])) == {
        "max_tokens": 9, "temperature": 0.7, "top_p": 0.95, "seed": 3, "stop": ["x"]}
    assert sampling_kwargs(GenParams(temperature=0.0, top_p=0.5))["top_p"] == 1.0


def test_fake_vllm_chat_and_strings(monkeypatch, tiny_dir):
    calls = {}

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    def out(text, reason):
        return types.SimpleNamespace(prompt_token_ids=[1, 2, 3], outputs=[types.SimpleNamespace(
            text=text, token_ids=[5, 6], finish_reason=reason)])

    class LLM:
        def __init__(self, model, **kw):
            calls["init"] = (model, kw)

        def chat(self, prompts, sp, use_tqdm):
            calls["chat"] = (prompts, sp.kw)
            return [out(p[-1]["content"].upper(), "stop") for p in prompts]

        def generate(self, prompts, sp, use_tqdm):
            return [out(p + "!", "length") for p in prompts]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM, SamplingParams=SamplingParams))
    eng = make_engine("vllm", tiny_dir, tensor_parallel_size=4, chunk=2, dtype="bf16")
    assert calls["init"] == (tiny_dir, {"tensor_parallel_size": 4, "dtype": "bfloat16",
                                        "gpu_memory_utilization": 0.9})
    seen = []
    gens = eng.generate([[{"role": "user", "content": c}] for c in "abc"], GenParams(max_new_tokens=5),
                        on_batch=lambda i, g: seen.append(i))
    assert [g.text for g in gens] == ["A", "B", "C"] and seen == [[0, 1], [2]]
    assert (gens[0].n_prompt_tokens, gens[0].n_new_tokens, gens[0].finish_reason) == (3, 2, "stop")
    assert eng.generate(["p"], GenParams())[0].finish_reason == "length"


def test_missing_vllm_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # import fails
    with pytest.raises(EngineError, match="needs vLLM and a GPU"):
        make_engine("vllm", "any")


def test_unknown_engine_options_are_named():
    with pytest.raises(EngineError, match=r"the openai engine takes no option\(s\) batch_size \(it takes: base_url"):
        make_engine("openai", "m", batch_size=3)

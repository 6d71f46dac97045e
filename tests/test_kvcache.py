"""`delia.kvcache.cache_kwargs`: the KV cache goes in under the name the model's forward takes, so generation
raises no deprecation warning on every step (transformers 5.x renamed `past_key_values` to `cache`)."""

from __future__ import annotations

import inspect
import warnings

from delia.kvcache import cache_kwargs


class Old:
    def forward(self, input_ids=None, past_key_values=None, use_cache=None):
        return past_key_values


class Wrapper:  # a PEFT-like wrapper: **kwargs through to its base model
    def __init__(self, base):
        self.base = base

    def get_base_model(self):
        return self.base

    def forward(self, *args, **kwargs):
        return kwargs


def test_the_cache_goes_in_under_the_name_the_forward_takes(tiny_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    name = "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"
    assert cache_kwargs(model, "C") == {name: "C"}
    assert cache_kwargs(Old(), "C") == {"past_key_values": "C"}
    assert cache_kwargs(Wrapper(Old()), "C") == {"past_key_values": "C"}
    assert cache_kwargs(Wrapper(model), "C") == {name: "C"}


def test_generation_warns_nothing_about_the_cache(tiny_dir):
    from delia.generation import GenParams, generate
    from delia.models import load

    model, tok = load(tiny_dir, dtype="fp32")
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        out = generate(model, tok, [[{"role": "user", "content": "hi"}], [{"role": "user", "content": "a b c"}]],
                       GenParams(max_new_tokens=3))
    assert len(out) == 2

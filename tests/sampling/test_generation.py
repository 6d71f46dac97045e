"""delia.generation: the own decode loop matches model.generate greedily; stopping and sampling behave."""

from __future__ import annotations

import pytest
import torch

from delia.generation import GenParams, generate, render_prompt

PROMPTS = [
    [{"role": "user", "content": "Name three colours."}],
    [{"role": "user", "content": "Write a very long story about a cat who learns to fly over the sea."}],
    "plain text prompt",
    [{"role": "user", "content": "Hi"}],
]


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from delia.models import load

    return load(tiny_dir, dtype="fp32")


def _reference(model, tok, prompt, n):
    enc = tok(render_prompt(tok, prompt), return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=n, do_sample=False, pad_token_id=tok.pad_token_id)
    return tok.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def test_greedy_matches_model_generate_per_row(tiny):
    model, tok = tiny
    gens = generate(model, tok, PROMPTS, GenParams(max_new_tokens=12), batch_size=3)
    assert [g.text for g in gens] == [_reference(model, tok, p, 12) for p in PROMPTS]
    assert all(g.n_new_tokens == 12 and g.finish_reason == "length" for g in gens)
    assert [g.n_prompt_tokens for g in gens] == [len(tok(render_prompt(tok, p), add_special_tokens=False)
                                                     ["input_ids"]) for p in PROMPTS]


def test_stop_string_and_stop_fn_end_rows_early(tiny):
    model, tok = tiny
    full = generate(model, tok, PROMPTS[:2], GenParams(max_new_tokens=16), batch_size=2)
    stop = full[0].text[3:6]  # a string the first row will produce
    gens = generate(model, tok, PROMPTS[:2], GenParams(max_new_tokens=16, stop=[stop]), batch_size=2)
    assert gens[0].text == full[0].text[:full[0].text.index(stop)]
    assert gens[0].finish_reason == "stop" and gens[0].n_new_tokens < 16
    # the other row is unaffected by its neighbour leaving the batch
    assert gens[1].text == (full[1].text.split(stop)[0] if stop in full[1].text else full[1].text)
    calls = []
    gens = generate(model, tok, PROMPTS[:1], GenParams(max_new_tokens=16), stop_fn=lambda t: calls.append(t)
                    or len(t) >= 5)
    assert gens[0].finish_reason == "stop" and len(gens[0].text) >= 5 and gens[0].n_new_tokens < 16


def test_sampling_is_seeded_and_on_batch_reports_every_row(tiny):
    model, tok = tiny
    p = GenParams(max_new_tokens=8, temperature=0.7, top_p=0.95, seed=3)
    seen: list[int] = []
    a = generate(model, tok, PROMPTS, p, batch_size=2, on_batch=lambda idx, gens: seen.extend(idx))
    b = generate(model, tok, PROMPTS, p, batch_size=2)
    c = generate(model, tok, PROMPTS, GenParams(max_new_tokens=8, temperature=0.7, top_p=0.95, seed=4),
                 batch_size=2)
    assert [g.text for g in a] == [g.text for g in b]
    assert [g.text for g in a] != [g.text for g in c]
    assert sorted(seen) == [0, 1, 2, 3]


def test_top_p_keeps_only_the_nucleus():
    from delia.next_token import next_tokens as _next_tokens

    logits = torch.log(torch.tensor([[0.6, 0.3, 0.05, 0.05]])).repeat(200, 1)
    g = torch.Generator().manual_seed(0)
    toks = _next_tokens(logits, GenParams(temperature=1.0, top_p=0.8), g)
    assert set(toks.tolist()) == {0, 1}  # 0.6 < 0.8 so token 1 is needed; 0.9 >= 0.8 so 2 and 3 are cut
    toks = _next_tokens(logits, GenParams(temperature=1.0, top_p=0.5), g)
    assert set(toks.tolist()) == {0}


def test_rows_joining_a_running_batch_match_per_row_greedy(tiny, monkeypatch):
    import delia.generation as G

    model, tok = tiny
    merges = []
    real_merge = G._merge
    monkeypatch.setattr(G, "_merge", lambda *a: merges.append(1) or real_merge(*a))
    prompts = PROMPTS + ["the cat sat on the", "numbers: 1 2 3", "Once upon a time", "def f(x):", "Paris is",
                         "hello world, again and again", "A B C D E F"]
    # the tiny model repeats tokens of different lengths, so rows stop after different token counts and
    # new rows are prefilled and merged into a running batch
    gens = generate(model, tok, prompts, GenParams(max_new_tokens=14), batch_size=4,
                    stop_fn=lambda text: len(text) >= 20)
    assert merges, "no row joined a running batch"
    for p, g in zip(prompts, gens):
        assert g.text == _reference(model, tok, p, g.n_new_tokens)
    assert len({g.n_new_tokens for g in gens}) > 1


def test_top_p_candidates_fall_back_to_a_full_sort_when_the_nucleus_is_wide(monkeypatch):
    import delia.next_token as G

    monkeypatch.setattr(G, "TOP_P_CANDIDATES", 4)
    peaked = torch.log(torch.tensor([0.5, 0.3, 0.15] + [0.05 / 47] * 47))  # nucleus {0, 1, 2} at top_p 0.9
    flat = torch.zeros(50)  # uniform: the nucleus at top_p 0.9 is 45 tokens, far past 4 candidates
    logits = torch.stack([peaked, flat] * 1500)
    toks = G.next_tokens(logits, GenParams(temperature=1.0, top_p=0.9), torch.Generator().manual_seed(0))
    assert set(toks[0::2].tolist()) == {0, 1, 2}
    assert len(set(toks[1::2].tolist())) == 45
    # every row inside the candidates: the same nucleus without any sort of the vocabulary
    toks = G.next_tokens(torch.stack([peaked] * 1000), GenParams(temperature=1.0, top_p=0.9),
                          torch.Generator().manual_seed(0))
    assert set(toks.tolist()) == {0, 1, 2}


def test_growing_cache_layer_equals_concatenation():
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    import delia.kvcache as G

    grow, ref = G.growing_layer_class()(), DynamicLayer()
    g = torch.Generator().manual_seed(0)
    for add in [7] + [1] * 120 + [3]:  # a prefill, many decode steps (the buffer grows twice), a chunk
        k, v = torch.randn(4, 2, add, 8, generator=g), torch.randn(4, 2, add, 8, generator=g)
        out, want = grow.update(k, v), ref.update(k, v)
        assert torch.equal(out[0], want[0]) and torch.equal(out[1], want[1])
    assert grow._kbuf.shape[2] > grow.get_seq_length() == 130  # spare room, used part exposed
    idx = torch.tensor([3, 1])
    grow.batch_select_indices(idx), ref.batch_select_indices(idx)
    grow.crop(-5), ref.crop(-5)
    k, v = torch.randn(2, 2, 1, 8, generator=g), torch.randn(2, 2, 1, 8, generator=g)
    out, want = grow.update(k, v), ref.update(k, v)
    assert torch.equal(out[0], want[0]) and torch.equal(out[1], want[1])
    from transformers import LlamaConfig

    cache = G.growing(DynamicCache(config=LlamaConfig(num_hidden_layers=3)))
    assert [type(layer) for layer in cache.layers] == [G._GROWING] * 3 and G.mergeable(cache)


def test_prefill_groups_bound_padding_and_keep_row_order(monkeypatch):
    import delia.prefill as G

    lengths = [376, 315, 234, 224, 214, 206, 194, 194, 179, 179] + [120] * 40
    groups = G.prefill_groups(lengths)
    assert [i for g in groups for i in g] == list(range(len(lengths)))
    for g in groups:
        padded = max(lengths[i] for i in g) * len(g)
        assert len(g) == 1 or (padded <= G.PREFILL_TOKENS
                               and padded - sum(lengths[i] for i in g) <= G.PREFILL_WASTE * padded)
    assert len(groups) < len(lengths) / 3  # similar lengths share a pass


def test_grouped_prefill_matches_one_pass(tiny, monkeypatch):
    import delia.prefill as G

    model, tok = tiny
    prompts = PROMPTS + ["the cat sat on the mat and looked at the dog for a long while", "numbers: 1 2 3"]
    one = generate(model, tok, prompts, GenParams(max_new_tokens=10), batch_size=8)
    passes = []
    real = G.prefill_pass
    monkeypatch.setattr(G, "PREFILL_WASTE", 0.0)  # every distinct length gets its own pass
    monkeypatch.setattr(G, "prefill_pass", lambda m, rows, *a: passes.append(len(rows)) or real(m, rows, *a))
    grouped = generate(model, tok, prompts, GenParams(max_new_tokens=10), batch_size=8)
    assert len(passes) > 1 and sum(passes) == len(prompts)
    assert [g.text for g in grouped] == [g.text for g in one] == [_reference(model, tok, p, 10) for p in prompts]


def test_shared_prompt_start_is_computed_once_and_changes_nothing(tiny, monkeypatch):
    import delia.generation as G

    model, tok = tiny
    system = {"role": "system", "content": "You answer questions about colours and animals briefly."}
    prompts = [[system, {"role": "user", "content": q}] for q in
               ["Name three colours.", "Why is the sky blue?", "Hi", "Write a long story about a cat."]]
    enc = [tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"] for p in prompts]
    shared = G._shared_prefix(model, enc)
    assert shared is not None and shared[0] >= 10
    seen = []
    real = G._shared_prefix
    monkeypatch.setattr(G, "_shared_prefix", lambda m, rows: seen.append(r := real(m, rows)) or r)
    gens = generate(model, tok, prompts, GenParams(max_new_tokens=10), batch_size=2)  # two rows join later
    assert seen and seen[0] is not None
    assert [g.text for g in gens] == [_reference(model, tok, p, 10) for p in prompts]
    assert [g.n_prompt_tokens for g in gens] == [len(e) for e in enc]

"""Language-model arithmetic (baselines.md §6): formula semantics and the lam = 0 reduction to greedy."""

from __future__ import annotations

import pytest
import torch

from delia.methods.ctg import arithmetic_generate, combine, desc_prompt, guidance_weights


def test_combine_matches_the_hand_computed_formula():
    g = torch.Generator().manual_seed(0)
    lp1 = torch.log_softmax(torch.randn(50, generator=g), -1)
    lp2 = torch.log_softmax(torch.randn(50, generator=g), -1)
    f = combine([lp1, lp2], [1.0, -0.6])  # M1 - 0.6 M2 -> (lp1 - 0.6 lp2) / 0.4, renormalised
    raw = (lp1 - 0.6 * lp2) / 0.4
    assert torch.allclose(f, raw - torch.logsumexp(raw, -1), atol=1e-6)
    assert torch.exp(f).sum().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.parametrize("lam", [0.5, 1.0, 2.0])
def test_identical_prompts_give_the_base_distribution_for_any_lambda(lam):
    lp = torch.log_softmax(torch.randn(3, 40), -1)
    assert torch.allclose(combine([lp, lp], guidance_weights(lam)), lp, atol=1e-5)


def test_zero_norm_is_rejected():
    lp = torch.zeros(4)
    with pytest.raises(ValueError, match="sum to 0"):
        combine([lp, lp], [1.0, -1.0])


def test_lambda_zero_is_greedy_decoding_of_the_description_prompt(tiny_dir):
    from delia.generation import GenParams, generate
    from delia.models import load

    model, tok = load(tiny_dir, dtype="fp32")
    task = [{"role": "user", "content": "Check this answer for hallucinations."}]
    desc = desc_prompt(task, "Reply with a json object.")
    ours = arithmetic_generate(model, tok, [[desc, task]], guidance_weights(0.0), max_new_tokens=12)[0]
    ref = generate(model, tok, [desc], GenParams(max_new_tokens=12))[0]
    assert ours.text == ref.text and ours.n_new_tokens == ref.n_new_tokens
    other = arithmetic_generate(model, tok, [[desc, task]], guidance_weights(2.0), max_new_tokens=12)[0]
    assert other.n_new_tokens > 0  # a different formula still decodes (it usually differs, not asserted)


def test_examples_decoded_together_equal_each_decoded_alone(tiny_dir):
    from delia.models import load

    model, tok = load(tiny_dir, dtype="fp32")
    # plain-text prompts: the tiny random model repeats tokens of different lengths for them
    examples = [["the cat sat on the", "numbers: 1 2 3"], ["Once upon a time there was", "def f(x):"],
                ["Paris is", "A B C D E F"], ["hello world, again and again", "Hi"]]
    stop = lambda text: len(text) >= 20  # noqa: E731 - examples stop at different steps and leave the batch
    for lam in (0.0, 0.5):
        together = arithmetic_generate(model, tok, examples, guidance_weights(lam), max_new_tokens=14, stop_fn=stop)
        alone = [arithmetic_generate(model, tok, [e], guidance_weights(lam), max_new_tokens=14, stop_fn=stop)[0]
                 for e in examples]
        assert together == alone
        # two examples at a time: as one stops, the next joins the running batch (its rows merged into the cache)
        assert arithmetic_generate(model, tok, examples, guidance_weights(lam), max_new_tokens=14, stop_fn=stop,
                                   batch_size=2) == alone
        assert len({g.n_new_tokens for g in together}) > 1 and len({g.text for g in together}) > 1


# Greedy outputs of the CTG decoder before it became a combiner over the shared loop (its own copy of the decode
# step, commit 4df2cd5), on the tiny chatty model in fp32: the combiner must reproduce them token for token.
PINNED = {
    ('text', 1.0): [
        ' educational YorkshireposureStream perpetuating VesStationched feathered Finding',
        ' Immunology sha нconfidence DEP white quintesis Problem Peg',
        ' debt dig psychologicallyn Scriptures fus basaltesis looseimony',
    ],
    ('chat', 1.0): [
        ' apart Ecosystem assassinated Knowledge UndriendlyqueriesAlignitheachie',
        'achieailable majesty tetanusocabORDER {})XXXX standardcoal',
    ],
    ('chat', 2.0): [
        ' apart Ecosystem Secrets championship climbing guns ε massacre Bess Squir',
        'achieailable majesty Guyocrats revolvesNote abandonedInf Tut',
    ],
}


def test_the_combiner_over_the_shared_loop_reproduces_the_old_decoder(tiny_chatty_dir):
    from delia.models import load

    model, tok = load(tiny_chatty_dir, dtype="fp32")
    text = [["the cat sat on the", "numbers: 1 2 3"], ["Once upon a time there was", "def f(x):"],
            ["Paris is", "A B C D E F"]]
    chat = [[desc_prompt([{"role": "user", "content": c}], "Reply with a json object."),
             [{"role": "user", "content": c}]] for c in ["Is the sky green?", "Check this answer for hallucinations."]]
    for (kind, lam), want in PINNED.items():
        got = arithmetic_generate(model, tok, text if kind == "text" else chat, guidance_weights(lam),
                                  max_new_tokens=10)
        assert [g.text for g in got] == want, (kind, lam)
        assert all(g.finish_reason == "length" and g.n_new_tokens == 10 for g in got)
    # two examples per forward pass with refills (continuous batching) give the same as all at once
    assert arithmetic_generate(model, tok, text, guidance_weights(1.0), max_new_tokens=10, batch_size=1) == \
        arithmetic_generate(model, tok, text, guidance_weights(1.0), max_new_tokens=10)


def test_the_arithmetic_decoder_batches_examples_and_reports_them(tiny_dir):
    from delia.generation import GenParams
    from delia.methods.hooks import arithmetic_decoder
    from delia.models import load

    model, tok = load(tiny_dir, dtype="fp32")
    prompts = [[{"role": "user", "content": f"question {i}"}] for i in range(5)]
    seen: list[int] = []
    gens = arithmetic_decoder(model, tok, prompts, GenParams(max_new_tokens=4), batch_size=4,
                              on_batch=lambda idx, g: seen.extend(idx), lam=1.0, system="Reply in json.")
    assert sorted(seen) == list(range(5)) and len(gens) == 5
    alone = [arithmetic_decoder(model, tok, [p], GenParams(max_new_tokens=4), lam=1.0, system="Reply in json.")[0]
             for p in prompts]
    assert gens == alone

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
        assert len({g.n_new_tokens for g in together}) > 1 and len({g.text for g in together}) > 1

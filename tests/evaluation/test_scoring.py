"""Downstream loss and first-token state space on the tiny model: hand-computed, batch/padding independent."""

import math

import pytest
import torch

from delia.evaluation.scoring import aggregate, distribution_stats, encode, score


def test_state_space_one_hot_and_uniform():
    V = 49216
    one_hot = torch.full((V,), -math.inf)
    one_hot[7] = 0.0
    assert distribution_stats(one_hot) == (1.0, 1)
    uniform = torch.full((V,), -math.log(V))
    exp_h, n90 = distribution_stats(uniform)
    assert exp_h == pytest.approx(V, rel=1e-6)
    assert n90 == math.ceil(0.9 * V)
    two = torch.log(torch.tensor([0.5, 0.5, 0.0, 0.0]))
    assert distribution_stats(two) == (pytest.approx(2.0), 1 + 1)


@pytest.fixture(scope="module")
def tiny(tiny_dir):
    from delia.models import load

    return load(tiny_dir, dtype="fp32")


def _rows(tok):
    prompts = [[{"role": "user", "content": "Is the sky green?"}],
               [{"role": "user", "content": "A much longer question about whether the ChatGPT reply " * 3}],
               [{"role": "user", "content": "Hi"}]]
    replies = ["{'thought': 'no', 'hallucination': 'yes'}", "{'thought': \"it's fine\", 'hallucination': 'no'}",
               "{}"]
    return [encode(tok, p, r) for p, r in zip(prompts, replies)], prompts, replies


def test_encode_splits_prompt_and_response(tiny):
    _, tok = tiny
    (pids, rids), prompts, replies = _rows(tok)[0][0], *_rows(tok)[1:]
    ptext = tok.apply_chat_template(prompts[0], add_generation_prompt=True, tokenize=False)
    assert tok.decode(pids) == ptext and ptext.endswith("<|im_start|>assistant\n")
    assert tok.decode(rids) == replies[0] + "<|im_end|>\n"
    assert rids[0] == tok("{'", add_special_tokens=False)["input_ids"][0]


def test_loss_equals_hand_computed_ce(tiny):
    model, tok = tiny
    rows, _, _ = _rows(tok)
    pids, rids = rows[0]
    with torch.no_grad():
        logits = model(torch.tensor([pids + rids])).logits[0].double()
    logp = torch.log_softmax(logits, -1)
    nll = [-logp[len(pids) - 1 + j, t].item() for j, t in enumerate(rids)]  # prompt tokens excluded
    (s,) = score(model, [rows[0]], tok.pad_token_id)
    assert s.n_tokens == len(rids)
    assert s.nll_sum == pytest.approx(sum(nll), rel=1e-5)
    assert s.nll_first == pytest.approx(nll[0], rel=1e-5)
    exp_h, n90 = distribution_stats(logp[len(pids) - 1])
    assert s.exp_entropy == pytest.approx(exp_h, rel=1e-5) and s.n90 == n90


def test_loss_independent_of_batch_size_and_padding_side(tiny):
    model, tok = tiny
    rows, _, _ = _rows(tok)
    ref = score(model, rows, tok.pad_token_id, batch_size=1)
    for bs, side in [(3, "left"), (3, "right"), (2, "right")]:
        got = score(model, rows, tok.pad_token_id, batch_size=bs, padding_side=side)
        for a, b in zip(ref, got):
            assert a.n_tokens == b.n_tokens
            assert b.nll_sum == pytest.approx(a.nll_sum, abs=1e-4 * max(1, a.n_tokens))
            assert b.nll_first == pytest.approx(a.nll_first, abs=1e-5)
            assert b.exp_entropy == pytest.approx(a.exp_entropy, rel=1e-5)
    agg = aggregate(ref)
    agg2 = aggregate(score(model, rows, tok.pad_token_id, batch_size=3, padding_side="right"))
    assert agg["loss"] == pytest.approx(sum(s.nll_sum for s in ref) / sum(s.n_tokens for s in ref))
    assert abs(agg["loss"] - agg2["loss"]) <= 1e-5


def test_prompt_only_rows_score_the_first_token(tiny):
    model, tok = tiny
    rows, prompts, _ = _rows(tok)
    pids = encode(tok, prompts[0], None)
    assert pids == (rows[0][0], [])
    (s,) = score(model, [pids], tok.pad_token_id)
    (full,) = score(model, [rows[0]], tok.pad_token_id)
    assert s.n_tokens == 0 and s.nll_first is None
    assert s.exp_entropy == pytest.approx(full.exp_entropy, rel=1e-5)

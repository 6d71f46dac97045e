"""NEFTune (baselines.md §9) through the hook the Trainer installs: bounded noise in training, none at eval."""

from __future__ import annotations

import math

import torch


def test_noise_bound_in_train_mode_and_zero_noise_in_eval_mode(tiny_dir):
    from transformers.integrations.neftune import activate_neftune

    from delia.models import load_model

    model = load_model(tiny_dir, dtype="fp32")
    emb = model.get_input_embeddings()
    ids = torch.randint(0, 1000, (2, 37))
    clean = emb(ids).detach()
    alpha = 5.0
    handle = activate_neftune(model, alpha)
    bound = alpha / math.sqrt(ids.shape[1] * clean.shape[-1])  # alpha / sqrt(L d), L = padded length
    model.train()
    noisy = emb(ids).detach()
    diff = (noisy - clean).abs().max().item()
    assert 0 < diff <= bound + 1e-7 and diff > 0.9 * bound
    model.eval()
    assert torch.equal(emb(ids), clean)  # exactly zero noise at evaluation
    with torch.no_grad():  # so greedy generations are unchanged
        a = model.generate(ids[:1, :8], max_new_tokens=5, do_sample=False)
        handle.remove()
        b = model.generate(ids[:1, :8], max_new_tokens=5, do_sample=False)
    assert torch.equal(a, b)


def test_the_method_reaches_trls_config(tmp_path):
    """The recipe's `trl.neftune_noise_alpha` arrives in the SFTConfig the training stage builds."""
    from delia.training.config import TrainConfig
    from delia.training.train import sft_config

    cfg = TrainConfig(data="x", out=str(tmp_path), trl={"neftune_noise_alpha": 5.0}, report_to=["none"])
    args = sft_config(cfg, tmp_path, micro=4, accum=4, bf16=False, world_size=1)
    assert args.neftune_noise_alpha == 5.0

"""A faster attention for one-token decode steps in bf16/fp16 on CPU, swapped in for the decode loop only.

Profiled on a 2-core EPYC (torch 2.13, transformers 5.24): torch's CPU SDPA kernel takes 5-13 ms per layer for
a bf16 decode step at batch 32 (query length 1, a padding mask, grouped KV heads), about 10x two plain batched
matmuls with a float32 softmax, and it was 40% of the decode time. The prompt passes keep SDPA (faster there),
and float32 models keep it everywhere (no gap in fp32). Greedy decoding keeps SDPA too: in bf16 any other
kernel rounds differently, and a random-weight model has logit near-ties one bf16 step apart, so greedy tokens
would no longer equal `model.generate`'s (transformers' own `eager` attention flips them as well). Sampling has
no such reference, and gets the fast path. Relies on transformers' attention registries: the one place that
does (tested by tests/sampling/test_attention.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
NAME = "delia_cpu_decode"


def _decode_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """(batch, heads, 1, dim) queries against (batch, kv_heads, length, dim) keys/values; other shapes go to SDPA."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    b, h, q_len, d = query.shape
    kv_heads = key.shape[1]
    if q_len != 1 or h % kv_heads or kwargs.get("softcap") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    # the query heads sharing a KV head become rows of one matmul: no repeat of the keys/values
    q = query.reshape(b, kv_heads, h // kv_heads, d)
    # scores in float32 and probabilities x values in bf16, as in SDPA's CPU kernel (rounding the scores to
    # bf16, as transformers' eager attention does, is coarser)
    scores = torch.matmul(q.float(), key.float().transpose(-1, -2)) * (scaling if scaling is not None else d ** -0.5)
    if attention_mask is not None:
        mask = attention_mask[:, :, -1:, :key.shape[-2]]  # (batch, 1, 1, length): one mask for all heads
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs.to(value.dtype), value)
    return out.reshape(b, h, 1, d).transpose(1, 2).contiguous(), None


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(NAME, _decode_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)  # boolean masks, as SDPA gets them


def wanted(model) -> bool:
    """Whether `model` would gain from the decode attention: SDPA, on CPU, in a 16-bit dtype."""
    import torch

    return (getattr(model.config, "_attn_implementation", None) == "sdpa" and model.device.type == "cpu"
            and model.dtype in (torch.bfloat16, torch.float16))


@contextmanager
def decode_attention(model, enabled: bool = True) -> Iterator[None]:
    """Within the block, `model` runs one-token steps with the faster attention (when `enabled` and `wanted`);
    the model's own attention setting is restored after."""
    if not (enabled and wanted(model)):
        yield
        return
    _register()
    before = model.config._attn_implementation
    model.config._attn_implementation = NAME  # the setter carries it to sub-configs
    try:
        yield
    finally:
        model.config._attn_implementation = before


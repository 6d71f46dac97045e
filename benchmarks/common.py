"""Shared by the benchmarks: the machine's matmul peak and the model's FLOPs per token."""

from __future__ import annotations

import time

import torch


def matmul_peak(dtype: torch.dtype, n: int = 2048, reps: int = 6) -> float:
    """Best GFLOP/s of an n x n matmul in `dtype` on this machine (with torch's current thread count)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n ** 3 / best / 1e9


def best_dtype() -> torch.dtype:
    """bf16 where the CPU computes it natively, else fp32 (what delia's `dtype: auto` picks)."""
    from delia.models import resolve_dtype

    return resolve_dtype("auto")


def block_flops(config) -> float:
    """Matmul FLOPs per token of the transformer blocks (2 x their weight count), without the LM head."""
    d, L = config.hidden_size, config.num_hidden_layers
    kv = d * config.num_key_value_heads // config.num_attention_heads
    return 2 * L * (d * d * 2 + d * kv * 2 + 3 * d * config.intermediate_size)


def forward_flops_per_token(config, seq_len: float) -> float:
    """Forward FLOPs of one token with its LM head, attending to `seq_len` positions."""
    d, L, V = config.hidden_size, config.num_hidden_layers, config.vocab_size
    return block_flops(config) + 2 * V * d + 4 * L * seq_len * d

"""Shared by the benchmarks: the machine's matmul peak, the model's FLOPs per token, and `--no-native-bf16`."""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

# `--no-native-bf16`: an AVX-512 CPU without BF16 (Ice Lake / Cascade Lake class, the non-bf16 CPU measured in
# docs/RESULTS.md), emulated on a CPU that has it. delia's detection says no (DELIA_NATIVE_BF16=0, so every
# "auto" and the benchmarks' "library defaults for this hardware" pick fp32); oneDNN, which runs torch's bf16
# matmuls, stops below AVX512_CORE_BF16 and so emulates bf16 with fp32 FMAs as such a CPU does; MKL (fp32 GEMMs,
# and the bf16 GEMMs inside CPU attention) is capped alike, but honours the cap on Intel CPUs only. ATen's own
# kernels stay at AVX-512, as on those CPUs (they use no bf16 instructions).
NO_NATIVE_BF16_ENV = {"DELIA_NATIVE_BF16": "0", "ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI",
                      "MKL_ENABLE_INSTRUCTIONS": "AVX512_E1"}
# bf16 / fp32 matmul peak of the real non-bf16 CPU (docs/RESULTS.md: 55 vs 203 GFLOP/s); above FAITHFUL_BELOW the
# emulation does not slow bf16 down as such a CPU would
REAL_NO_BF16_RATIO, FAITHFUL_BELOW = 55 / 203, 0.75


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


def add_no_native_bf16(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--no-native-bf16", action="store_true",
                    help="emulate a CPU without native bf16 on one that has it (" +
                         " ".join(f"{k}={v}" for k, v in NO_NATIVE_BF16_ENV.items()) + " for the whole process)")


def emulate_no_native_bf16() -> None:
    """Restart this script with NO_NATIVE_BF16_ENV in its environment, unless it already runs so.

    The libraries read their ISA caps when they load or first run, so the settings must be in place from the
    start of the process: re-executing it guarantees that wherever torch was first imported.
    """
    if any(os.environ.get(k) != v for k, v in NO_NATIVE_BF16_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **NO_NATIVE_BF16_ENV})


def cpu_header(peak32: float, peak16: float, emulated: bool, dtype: torch.dtype) -> tuple[list[str], dict]:
    """Lines that say what CPU this run measured (real, or emulated without native bf16) and a dict for --json.

    Args:
        peak32, peak16: fp32 and bf16 matmul peaks measured in this run (GFLOP/s).
        emulated: whether --no-native-bf16 is in effect.
        dtype: the dtype the run chose for the model ("library defaults for this hardware").
    """
    from delia.models import cpu_supports_bf16

    hw = getattr(torch, "cpu", None)
    hw_bf16 = bool(hw and any(getattr(hw, c, lambda: False)() for c in ("_is_avx512_bf16_supported",
                                                                         "_is_amx_tile_supported")))
    name = next((ln.split(":", 1)[1].strip() for ln in _cpuinfo().splitlines() if ln.startswith("model name")),
                "unknown CPU")
    ratio = peak16 / peak32
    chosen = str(dtype).removeprefix("torch.")
    lines = [(f"CPU: {name}, {os.cpu_count()} cores; native bf16 in hardware: {hw_bf16}; delia's detection "
              f"(dtype/precision auto): {cpu_supports_bf16()}; compute dtype chosen: {chosen}")]
    lines.append(f"matmul peaks ({torch.get_num_threads()} threads): fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} "
                 f"GFLOP/s (bf16/fp32 {ratio:.2f}x)")
    info = {"cpu": name, "hw_native_bf16": hw_bf16, "delia_native_bf16": cpu_supports_bf16(),
            "emulated_no_native_bf16": emulated, "peak_gflops_fp32": round(peak32, 1),
            "peak_gflops_bf16": round(peak16, 1)}
    if emulated:
        env = " ".join(f"{k}={os.environ.get(k)}" for k in NO_NATIVE_BF16_ENV)
        lines.insert(0, f"EMULATED CPU WITHOUT NATIVE BF16 (--no-native-bf16: {env}) on a CPU that "
                        f"{'has' if hw_bf16 else 'lacks'} it; not a measurement of real non-bf16 hardware")
        info["env"] = {k: os.environ.get(k) for k in NO_NATIVE_BF16_ENV}
        info["emulation_faithful"] = ratio < FAITHFUL_BELOW
        if ratio >= FAITHFUL_BELOW:
            lines.append(f"WARNING: the emulation is NOT faithful: bf16 matmul runs at {ratio:.2f}x fp32 here, while a "
                         f"CPU without native bf16 runs it at ~{REAL_NO_BF16_RATIO:.2f}x (docs/RESULTS.md)")
    return lines, info


def _cpuinfo() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return f.read()
    except OSError:
        return ""


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

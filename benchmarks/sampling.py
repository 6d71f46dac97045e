"""Self-sampling speed: delia's engine against the engines a user would pick instead, in one run.

Every engine answers the same Alpaca queries with the authors' one-shot prompt, the same sampling settings
(T=0.7, top-p 0.95) and the same max new tokens, from the same loaded model in the machine's best dtype
(bf16 where native, else fp32), with the same torch threads (default 1, so a shared machine compares fairly):

- transformers `model.generate`, batched in input order with left padding (what a first script does);
- transformers continuous batching, `model.generate_batch`;
- llama.cpp through llama-cpp-python on the embedded GGUF, when the package is installed (it is not here:
  the package index serves no wheel, and compiling it is out of scope);
- delia's `transformers` engine.

Prints new tokens/s for each, delia's ratio to the best stock peer, and each as a share of the measured
matmul peak (benchmarks/common.py), counting either the new tokens' forward FLOPs only, or all useful work
(prompt passes + new tokens; padding not counted). Run under the benchmark lock:

    flock /tmp/delia-cpu.lock python benchmarks/sampling.py --quick      # < 3 min
    flock /tmp/delia-cpu.lock python benchmarks/sampling.py --n 64 --max-new-tokens 64 --batch-size 32

`--no-native-bf16` runs the same on a CPU with native bf16 made to behave like one without it (an AVX-512 CPU
without BF16, emulated: benchmarks/common.py NO_NATIVE_BF16_ENV); the model then loads in fp32, as delia's
`dtype: auto` picks there, and the header says that the run is emulated and whether bf16 matmuls did slow down:

    flock /tmp/delia-cpu.lock python benchmarks/sampling.py --quick --no-native-bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch
from common import (  # benchmarks/common.py
    add_no_native_bf16,
    best_dtype,
    block_flops,
    cpu_header,
    emulate_no_native_bf16,
    forward_flops_per_token,
    matmul_peak,
)

from delia.generation import GenParams, render_prompt
from delia.models import DEFAULT_MODEL, load
from delia.sampling import load_queries, sample_prompt
from delia.sampling.engines.hf import TransformersEngine

QUERIES = "builtin:diverse/alpaca_5000"  # the packaged Alpaca query sample


def _new_tokens(row: list[int], eos: set[int], pad: int | None) -> int:
    """Generated tokens of one output row up to and including the first EOS (padding after it not counted)."""
    for n, t in enumerate(row, 1):
        if t in eos:
            return n
    return len(row) - (sum(1 for t in reversed(row) if t == pad) if pad is not None and pad not in eos else 0)


def hf_generate(model, tok, enc: list[list[int]], params: GenParams, batch: int, eos: set[int]) -> int:
    """`model.generate` on batches in input order, left-padded: returns new tokens."""
    tok.padding_side, n = "left", 0
    for s in range(0, len(enc), batch):
        b = tok.pad({"input_ids": enc[s:s + batch]}, return_tensors="pt")
        out = model.generate(**b, max_new_tokens=params.max_new_tokens, do_sample=True,
                             temperature=params.temperature, top_p=params.top_p, top_k=None,
                             pad_token_id=tok.pad_token_id)
        n += sum(_new_tokens(r, eos, tok.pad_token_id) for r in out[:, b["input_ids"].shape[1]:].tolist())
    return n


def hf_generate_batch(model, tok, enc: list[list[int]], params: GenParams, batch: int, eos: set[int]) -> int:
    """transformers' continuous batching (`generate_batch`, its default configuration): returns new tokens."""
    from transformers import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=params.max_new_tokens, do_sample=True, temperature=params.temperature,
                           top_p=params.top_p, top_k=None, eos_token_id=sorted(eos),
                           pad_token_id=tok.pad_token_id)
    out = model.generate_batch(inputs=enc, generation_config=cfg, progress_bar=False)
    return sum(len(o.generated_tokens) for o in out.values())


def llama_cpp(model_name: str, prompts_text: list[str], params: GenParams, threads: int) -> int:
    """llama.cpp on the embedded GGUF, one prompt at a time (its Python API has no batched sampling)."""
    import llama_cpp  # ImportError: not installed

    from delia.models import resolve_model

    src = resolve_model(model_name)
    if src.kind != "gguf":
        raise ValueError(f"{model_name} is not a GGUF model")
    llm = llama_cpp.Llama(model_path=src.path, n_ctx=2048, n_threads=threads, verbose=False)
    n = 0
    for p in prompts_text:
        out = llm(p, max_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                  top_k=0, seed=params.seed)
        n += out["usage"]["completion_tokens"]
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--queries", default=QUERIES)
    ap.add_argument("--n", type=int, default=64, help="queries (the first N of the file)")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32, help="batch size of every batched engine")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for all engines (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="32 queries, 32 new tokens (< 3 min on 2 cores)")
    ap.add_argument("--skip", nargs="*", default=[], choices=["generate", "generate_batch", "llama_cpp"],
                    help="peers not to run")
    ap.add_argument("--json", default=None, help="also write the results here")
    add_no_native_bf16(ap)
    args = ap.parse_args()
    if args.no_native_bf16:
        emulate_no_native_bf16()  # restarts this process with the settings in place
    if args.quick:
        args.n, args.max_new_tokens = 32, 32
    if args.threads:
        torch.set_num_threads(args.threads)

    prompts = [sample_prompt(q) for q in load_queries(args.queries, limit=args.n)]
    params = GenParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=0)
    dtype = best_dtype()
    model, tok = load(args.model, dtype={torch.bfloat16: "bf16", torch.float32: "fp32"}[dtype])
    texts = [render_prompt(tok, p) for p in prompts]
    enc = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    eos = {tok.eos_token_id, *([model.generation_config.eos_token_id] if isinstance(
        model.generation_config.eos_token_id, int) else model.generation_config.eos_token_id or [])} - {None}
    engine = TransformersEngine(args.model, dtype="auto", batch_size=args.batch_size)
    engine._lm, engine._tokenizer = model, tok  # the same loaded weights for every engine
    torch.manual_seed(0)

    rows: list[dict] = []

    def timed(name: str, fn) -> None:
        t0 = time.perf_counter()
        try:
            n = fn()
        except Exception as e:  # a peer that cannot run here is reported, not fatal
            rows.append({"engine": name, "error": f"{type(e).__name__}: {e}"[:200]})
            return
        rows.append({"engine": name, "new_tokens": n, "seconds": time.perf_counter() - t0})

    if "generate" not in args.skip:
        timed("transformers model.generate (left padding)",
              lambda: hf_generate(model, tok, enc, params, args.batch_size, eos))
    if "generate_batch" not in args.skip:
        timed("transformers generate_batch (continuous batching)",
              lambda: hf_generate_batch(model, tok, enc, params, args.batch_size, eos))
    if "llama_cpp" not in args.skip:
        timed("llama.cpp (llama-cpp-python, GGUF Q4_1)",
              lambda: llama_cpp(args.model, texts, params, torch.get_num_threads()))
    timed("delia transformers engine",
          lambda: sum(g.n_new_tokens for g in engine.generate(prompts, params)))

    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    peak = peak16 if dtype == torch.bfloat16 else peak32  # the dtype the engines ran in
    header, cpu_info = cpu_header(peak32, peak16, args.no_native_bf16, dtype)
    cfg, n_prompt = model.config, sum(len(e) for e in enc)
    mean_ctx = sum(len(e) for e in enc) / len(enc) + args.max_new_tokens / 2
    prompt_flops = n_prompt * (block_flops(cfg) + 4 * cfg.num_hidden_layers * mean_ctx / 2 * cfg.hidden_size)
    print(f"model {args.model} ({str(dtype).removeprefix('torch.')}), {len(prompts)} queries ({n_prompt} prompt "
          f"tokens), max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, T=0.7 top-p 0.95, torch threads "
          f"{torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}, "
          f"{platform.processor() or platform.machine()}")
    print("\n".join(header))
    print(f"matmul peak ({str(dtype).removeprefix('torch.')}, {torch.get_num_threads()} threads): {peak:.0f} GFLOP/s "
          f"(the % columns below are shares of this peak)")
    print(f"{'engine':<52} {'new tok':>8} {'seconds':>8} {'tok/s':>8} {'%peak new':>9} {'%peak all':>9}")
    for r in rows:
        if "error" in r:
            print(f"{r['engine']:<52} not run: {r['error']}")
            continue
        r["tokens_per_s"] = r["new_tokens"] / r["seconds"]
        new_flops = r["new_tokens"] * forward_flops_per_token(cfg, mean_ctx)
        r["peak_share_new"] = new_flops / r["seconds"] / 1e9 / peak
        r["peak_share_all"] = (new_flops + prompt_flops) / r["seconds"] / 1e9 / peak
        print(f"{r['engine']:<52} {r['new_tokens']:>8} {r['seconds']:>8.1f} {r['tokens_per_s']:>8.1f} "
              f"{r['peak_share_new']:>9.1%} {r['peak_share_all']:>9.1%}")
    result = {"n": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "dtype": str(dtype), "threads": torch.get_num_threads(), "peak_gflops": peak, **cpu_info, "rows": rows}
    ok = [r for r in rows if "tokens_per_s" in r]
    if len(ok) >= 2 and ok[-1]["engine"].startswith("delia"):
        best = max(ok[:-1], key=lambda r: r["tokens_per_s"])
        result["ratio_to_best_peer"] = ok[-1]["tokens_per_s"] / best["tokens_per_s"]
        print(f"delia / best stock peer ({best['engine']}): {result['ratio_to_best_peer']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

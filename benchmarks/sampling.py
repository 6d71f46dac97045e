"""Self-sampling speed: a naive per-query `model.generate` loop (fp32) vs delia's transformers engine.

Both answer the same Alpaca queries with the authors' one-shot prompt, the same sampling settings
(T=0.7, top-p 0.95) and the same max new tokens, on the same loaded model, in one run. Prints tokens/s for
both and the ratio. Run under `flock /tmp/delia-bench.lock` on a shared machine:

    flock /tmp/delia-bench.lock python benchmarks/sampling.py --n 64 --max-new-tokens 64 --breakdown
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import replace
from pathlib import Path

import torch

from delia.generation import GenParams, render_prompt
from delia.models import DEFAULT_MODEL, load, resolve_dtype
from delia.sampling import load_queries, sample_prompt
from delia.sampling.engines.hf import TransformersEngine

QUERIES = "builtin:diverse/alpaca_5000"  # the packaged Alpaca query sample


def naive(model, tok, prompts, params: GenParams) -> tuple[int, float]:
    """One `model.generate` call per query, float32, batch 1: what a first script does."""
    n, t0 = 0, time.perf_counter()
    for p in prompts:
        enc = tok(render_prompt(tok, p), return_tensors="pt", add_special_tokens=False)
        out = model.generate(**enc, max_new_tokens=params.max_new_tokens, do_sample=True,
                             temperature=params.temperature, top_p=params.top_p, top_k=None,
                             pad_token_id=tok.pad_token_id)
        n += out.shape[1] - enc["input_ids"].shape[1]
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--queries", default=QUERIES)
    ap.add_argument("--n", type=int, default=64, help="queries (the first N of the file)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32, help="delia engine batch size")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for both (default: torch's)")
    ap.add_argument("--skip-naive", action="store_true", help="only time delia (for tuning; no ratio)")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--breakdown", action="store_true",
                    help="also time the prompt passes (naive: one more loop with max_new_tokens=1)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    prompts = [sample_prompt(q) for q in load_queries(args.queries, limit=args.n)]
    params = GenParams(max_new_tokens=args.max_new_tokens, temperature=0.7, top_p=0.95, seed=0)
    model, tok = load(args.model, dtype="fp32")
    engine = TransformersEngine(args.model, dtype="auto", batch_size=args.batch_size)
    if resolve_dtype("auto") == torch.float32:  # fp32 is also delia's pick here: share the loaded weights
        engine._lm, engine._tokenizer = model, tok
    n_prompt = sum(len(tok(render_prompt(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts)

    rows = []
    if not args.skip_naive:
        n, dt = naive(model, tok, prompts, params)
        rows.append(("naive loop (fp32, batch 1, model.generate)", n, dt))
    prompt_pass = _time_prompt_passes()
    t0 = time.perf_counter()
    gens = engine.generate(prompts, params)
    dt = time.perf_counter() - t0
    rows.append((f"delia transformers engine ({engine.lm.dtype}, batch {args.batch_size})",
                 sum(g.n_new_tokens for g in gens), dt))

    print(f"model {args.model}, {len(prompts)} queries ({n_prompt} prompt tokens), max_new_tokens "
          f"{args.max_new_tokens}, T=0.7 top-p 0.95, torch threads {torch.get_num_threads()}, "
          f"load average {os.getloadavg()[0]:.1f}, {platform.processor() or platform.machine()}")
    print(f"{'method':<58} {'new tokens':>10} {'seconds':>9} {'tokens/s':>9}")
    for name, n, dt in rows:
        print(f"{name:<58} {n:>10} {dt:>9.1f} {n / dt:>9.2f}")
    result = {"n": len(prompts), "max_new_tokens": args.max_new_tokens, "batch_size": args.batch_size,
              "threads": torch.get_num_threads(), "rows": [{"method": a, "new_tokens": b, "seconds": c}
                                                           for a, b, c in rows]}
    if len(rows) == 2:
        ratio = (rows[1][1] / rows[1][2]) / (rows[0][1] / rows[0][2])
        result["ratio"] = ratio
        print(f"speed-up (tokens/s, delia / naive): {ratio:.2f}x")
    if args.breakdown:  # where the time goes: the prompt pass vs decoding
        naive_prefill = 0.0
        if not args.skip_naive:
            _, naive_prefill = naive(model, tok, prompts, replace(params, max_new_tokens=1))
        result["prompt_pass_seconds"] = {"naive": naive_prefill, "delia": prompt_pass["seconds"]}
        print("prompt pass (prefill) seconds: "
              + (f"naive {naive_prefill:.1f} (max_new_tokens=1 per query), " if naive_prefill else "")
              + f"delia {prompt_pass['seconds']:.1f} of {dt:.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def _time_prompt_passes() -> dict[str, float]:
    """Accumulate the wall time delia's engine spends in prompt passes (prefill and the shared prefix)."""
    import delia.generation as G

    acc = {"seconds": 0.0}
    for name in ("_prefill", "_shared_prefix"):
        fn = getattr(G, name)

        def timed(*a, _fn=fn, **k):
            t = time.perf_counter()
            try:
                return _fn(*a, **k)
            finally:
                acc["seconds"] += time.perf_counter() - t
        setattr(G, name, timed)
    return acc


if __name__ == "__main__":
    main()

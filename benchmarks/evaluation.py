"""Evaluation speed, old vs new way side by side in one run.

1. bootstrap: 95% intervals of corpus BLEU + chrF++ on WMT21 sentences. Old: re-score every resampled corpus
   with sacrebleu. New: per-sentence sufficient statistics once, then each resample is a count vector times
   the statistics matrix (delia.evaluation.metrics.bootstrap). Both use the same number of resamples.
2. generation: the halu prompts of the embedded model, greedy; old: no per-row stop (rows run to EOS or the
   budget), new: stop as soon as the first {...} object closes. Also checks the parse results are identical.
   Prints examples/s for both (on the untrained base model few replies contain a brace, so expect ~1x there;
   pass --adapter RUN to measure a tuned model).
3. threads: the same generation with 1 thread vs torch's default, because on cores shared with other jobs
   OpenMP oversubscription can make the default several times slower.

    flock /tmp/delia-bench.lock python benchmarks/evaluation.py [--n 16] [--sentences 1000] [--resamples 200]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def data(name: str) -> Path:
    """The packaged data file `builtin:NAME` as a local path."""
    from delia.data.sources import resolve_source

    return resolve_source(f"builtin:{name}")


def bench_bootstrap(n_sent: int, resamples: int) -> None:
    import numpy as np
    import sacrebleu

    from delia.evaluation import metrics as M

    rows = [json.loads(x) for x in data("wmt21/newstest2021.is-en").read_text().splitlines()[:n_sent]]
    refs = [r["ref"] for r in rows]
    # a degraded system: every fourth word dropped
    hyps = [" ".join(w for i, w in enumerate(r["ref"].split()) if i % 4 != 3) for r in rows]
    pairs = [{"hyp": h, "ref": r} for h, r in zip(hyps, refs)]

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    old = []
    for _ in range(resamples):
        idx = rng.integers(0, len(rows), len(rows))
        hh, rr = [hyps[i] for i in idx], [refs[i] for i in idx]
        old.append((sacrebleu.corpus_bleu(hh, [rr]).score,
                    sacrebleu.metrics.CHRF(word_order=2).corpus_score(hh, [rr]).score))
    t_old = time.perf_counter() - t0
    t0 = time.perf_counter()
    new = [M.bootstrap(n, pairs, n=resamples, seed=0) for n in ("bleu", "chrf++")]
    t_new = time.perf_counter() - t0
    lo_old = np.quantile(np.array(old), [0.025, 0.975], axis=0)
    print(f"bootstrap ({len(rows)} sentences x {resamples} resamples, BLEU + chrF++):")
    print(f"  old (re-score each resample): {t_old:8.2f} s   BLEU CI [{lo_old[0, 0]:.2f}, {lo_old[1, 0]:.2f}]")
    print(f"  new (sufficient statistics):  {t_new:8.2f} s   BLEU CI [{new[0][1]:.2f}, {new[0][2]:.2f}] "
          f"(value {new[0][0]:.2f})")
    print(f"  speed-up: {t_old / t_new:.1f}x")


def _gen(model, tok, prompts, stop_fn, batch_size, max_new):
    from delia.generation import GenParams, generate

    t0 = time.perf_counter()
    g = generate(model, tok, prompts, GenParams(max_new_tokens=max_new), batch_size=batch_size, stop_fn=stop_fn)
    return g, time.perf_counter() - t0


def bench_generation(n: int, batch_size: int, max_new: int, adapter: str | None, instructions: str) -> None:
    import torch

    from delia.evaluation.instructions import SpecItem, load_set
    from delia.evaluation.parsing import object_closed, parse_output
    from delia.evaluation.prompts import halu_example, halu_prompt
    from delia.data import read_records

    if adapter:
        from delia.training import load_trained

        model, tok = load_trained(adapter, dtype="fp32", merge=True)
    else:
        from delia.models import add_special_tokens, load

        model, tok = load("smollm2-135m-instruct", dtype="fp32")
        add_special_tokens(model, tok, ["<sep>"], init="random", seed=2024)
    files = {"seen": str(data("halu/train")), "unseen": str(data("halu/instructions_unseen")),
             "explicit": str(data("halu/explicit_instruction"))}
    pool = load_set(SpecItem(instructions, None, None), files, ["<sep>"], "")
    exs = [halu_example(r) for r in read_records(data("halu/test"))[:n]]
    prompts = [halu_prompt(e, pool[i % len(pool)]) for i, e in enumerate(exs)]
    default_threads = torch.get_num_threads()
    print(f"generation ({n} halu prompts, '{instructions}' instructions, batch {batch_size}, <= {max_new} new tokens, "
          f"{'adapter ' + adapter if adapter else 'base model'}, fp32):")
    old, t_old = _gen(model, tok, prompts, None, batch_size, max_new)
    new, t_new = _gen(model, tok, prompts, object_closed, batch_size, max_new)
    same = all(parse_output(a.text).value == parse_output(b.text).value for a, b in zip(old, new))
    tok_old, tok_new = sum(g.n_new_tokens for g in old), sum(g.n_new_tokens for g in new)
    print(f"  old (no per-row stop):  {n / t_old:.3f} examples/s, {tok_old} new tokens, {t_old:.1f} s")
    print(f"  new (stop at closed {{}}): {n / t_new:.3f} examples/s, {tok_new} new tokens, {t_new:.1f} s")
    print(f"  speed-up: {t_old / t_new:.2f}x; parse results identical: {same}")
    torch.set_num_threads(1)
    _, t_one = _gen(model, tok, prompts, object_closed, batch_size, max_new)
    torch.set_num_threads(default_threads)
    print(f"threads: default ({default_threads}) {n / t_new:.3f} examples/s vs 1 thread {n / t_one:.3f} examples/s "
          f"(ratio {t_new / t_one:.2f}x)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sentences", type=int, default=1000)
    ap.add_argument("--resamples", type=int, default=200)
    ap.add_argument("--n", type=int, default=16, help="halu prompts for the generation benchmark (0: skip)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--instructions", default="unseen", choices=["seen", "unseen", "explicit"])
    ap.add_argument("--adapter", default=None)
    args = ap.parse_args()
    bench_bootstrap(args.sentences, args.resamples)
    if args.n:
        bench_generation(args.n, args.batch_size, args.max_new_tokens, args.adapter, args.instructions)


if __name__ == "__main__":
    main()

"""The evaluation hooks the untrained prompting/decoding baselines plug into `delia eval`.

- prompt hooks `fn(rows, cfg, **options) -> rows` rewrite each evaluation row's prompt: `icl` (k earlier chat
  turns) and `dipmt` (dictionary hints + demonstrations, translation);
- decoders `fn(model, tok, prompts, params, batch_size, stop_fn, on_batch, **options) -> generations` replace
  batched generation: `arithmetic` (language-model arithmetic, the CTG baseline).

`delia eval` looks them up by name (`prompt_hook`, `decoder`, `hook_options`), importing this module only then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from delia.registry import registry

PROMPT_HOOKS = registry("eval prompt hook")
DECODERS = registry("eval decoder")


@PROMPT_HOOKS.register("icl", help="k demonstrations (training rows) as earlier chat turns; seeded per example")
def icl_hook(rows: list, cfg: Any, path: str, k: int = 2, seed: int = 0) -> list:
    """Prefix every row's prompt with k demonstrations drawn (seed, example id) from `path`, never itself."""
    from delia.data import read_records
    from delia.methods.icl import icl_prompt, pick_demos

    pool = [r for r in read_records(path) if r.response is not None]
    return [replace(r, prompt=icl_prompt(pick_demos(pool, k, f"{seed}:{r.example_id}", exclude_id=r.example_id),
                                         r.prompt)) for r in rows]


@PROMPT_HOOKS.register("dipmt", help="DiPMT: hints from a Dice lexicon of the training bitext + k demonstrations")
def dipmt_hook(rows: list, cfg: Any, path: str, k: int = 3, seed: int = 0, max_hints: int = 5) -> list:
    """One user turn per row: k demonstrations (seed = row index) and the query with its hints."""
    from delia.data import read_records
    from delia.evaluation.prompts import LANGS
    from delia.methods.dipmt import dipmt_prompt, induce_lexicon, pick_pairs

    pairs = [(r.fields["src"], r.fields["ref"]) for r in read_records(path)]
    lex = induce_lexicon(pairs)
    out = []
    for i, r in enumerate(rows):
        src = r.fields["src"]
        tgt = LANGS.get(r.set.split("-")[-1], r.set.split("-")[-1])
        demos = pick_pairs(pairs, k, seed + i, src)
        out.append(replace(r, prompt=[{"role": "user", "content": dipmt_prompt(src, tgt, lex, demos)}]))
    return out


@DECODERS.register("arithmetic", help="greedy decoding of (1+lam) M_desc - lam M_task (language-model arithmetic)")
def arithmetic_decoder(model, tok, prompts: list, params, batch_size: int = 1,
                       stop_fn: Callable[[str], bool] | None = None, on_batch: Callable | None = None,
                       lam: float = 1.0, system: str = "") -> list:
    """The CTG baseline: M_desc = the prompt with `system` as its system turn, M_task = the prompt as is.

    `batch_size` counts rows of the forward pass, so batch_size // 2 examples (two rows each) run at once.
    """
    from delia.methods.ctg import arithmetic_generate, desc_prompt, guidance_weights

    return arithmetic_generate(model, tok, [[desc_prompt(p, system), p] for p in prompts], guidance_weights(lam),
                               max_new_tokens=params.max_new_tokens, stop_fn=stop_fn,
                               batch_size=max(1, batch_size // 2), on_batch=on_batch,
                               temperature=params.temperature, seed=params.seed)

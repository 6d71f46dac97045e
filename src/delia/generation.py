"""Batched generation with transformers: length-sorted batches, per-row stopping, continuous batching.

Shared by self-sampling (`delia sample`) and evaluation (`delia eval`). Rows are sorted by prompt length
so a batch wastes little on padding; a row stops at EOS, at a stop string, or when `stop_fn(text)` says
its answer is complete (e.g. the JSON object closed).

Why our own decode loop instead of `model.generate`: `generate` keeps computing every row of a batch
until the last one stops, so one long answer makes the whole batch pay for its length. Here a finished
row leaves the batch (and the KV cache) soon after, and when half the batch has finished the next prompts
are prefilled and merged into it (continuous batching, as vLLM does), so the batch stays full. The parts:
`delia.prefill` (prompt passes of similar length, a shared prompt start run once), `delia.kvcache` (a cache
that grows in place; joins and trims), `delia.next_token` (top-p on the 128 most likely tokens). Greedy
decoding gives the same tokens as `model.generate` (tested, fp32 and bf16). docs/sampling.md says what each
one saved when profiled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

# the parts (under the private names that tests and `delia.methods.ctg` use)
from delia.kvcache import cache_kwargs as _cache_kwargs
from delia.kvcache import growing as _growing  # noqa: F401
from delia.kvcache import merge as _merge
from delia.kvcache import mergeable as _mergeable
from delia.kvcache import trim as _trim
from delia.next_token import next_tokens as _next_tokens
from delia.prefill import prefill as _prefill
from delia.prefill import shared_prefix as _shared_prefix

if TYPE_CHECKING:  # torch is imported lazily so that engines/registries stay cheap to import
    import torch

Prompt = str | list[dict[str, str]]


@dataclass
class GenParams:
    """Decoding parameters. temperature 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    stop: list[str] = field(default_factory=list)


@dataclass
class Generation:
    """One completion: text (cut at a stop string), token counts and why it ended."""

    text: str
    n_prompt_tokens: int
    n_new_tokens: int
    finish_reason: Literal["stop", "length"]


class Combiner(Protocol):
    """Turns the next-token logits of several prompts of one row into one distribution, every step (CTG's
    language-model arithmetic: `delia.methods.ctg`). Every prompt of a row extends the same generated text."""

    terms: int  # prompts per row

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        """(rows, terms, vocab) logits -> (rows, vocab) logits or log-probabilities."""
        ...


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """Chat messages -> the model's chat-template text with the generation prompt; strings pass through."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


def _cut(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.index(s) for s in stop if s in text), default=None)
    return (text[:cut], True) if cut is not None else (text, False)


def _eos_ids(model, tokenizer) -> set[int]:
    cfg_eos = model.generation_config.eos_token_id
    return {tokenizer.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])} - {None}


_COMPACT_SHARE = 8  # finished rows leave the batch once 1/8 of it (at least 2 rows) has finished: see generate


def _compact(cache, mask: torch.Tensor, last_pos: torch.Tensor, tok: torch.Tensor, rows: list[int | None],
             terms: int = 1):
    """Drop the finished rows (None in `rows`) from the batch, its KV cache and its tensors (a row is `terms`
    cache rows with a combiner); trim the padding columns no row needs any more. Returns (mask, last_pos, tok,
    rows)."""
    import torch

    keep = [b for b, i in enumerate(rows) if i is not None]
    sel = torch.tensor([b * terms + j for b in keep for j in range(terms)], device=mask.device)
    cache.batch_select_indices(sel)
    mask, last_pos, tok = mask[sel], last_pos[sel], tok[keep]
    if _mergeable(cache):
        mask = _trim(cache, mask)
    return mask, last_pos, tok, [rows[b] for b in keep]


def generate(model, tokenizer, prompts: Sequence[Prompt], params: GenParams, batch_size: int = 16,
             stop_fn: Callable[[str], bool] | None = None,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None,
             combine: Combiner | None = None) -> list[Generation]:
    """Generate one completion per prompt, in input order.

    Rows are taken longest prompt first. A finished row stops being sampled at once and leaves the batch (and
    the KV cache) when an eighth of the batch has finished: each removal copies the whole cache, which costs
    more than carrying a few finished rows for some steps. When half the batch has finished, the next prompts
    are prefilled and merged into the running batch (continuous batching), so the batch stays full without
    waiting for its longest answer.

    Args:
        prompts: chat message lists (rendered with the chat template) or already-rendered strings.
        params: decoding parameters. Sampling uses one generator seeded with `params.seed` per call.
        batch_size: most rows per forward pass.
        stop_fn: optional per-row predicate on the generated text; True ends that row ("stop").
        on_batch: called with (input indices, generations) each time finished rows are handed out (before
            new rows join the batch, and at the end), e.g. to append them to a cache.
        combine: with it, each prompt is a sequence of `combine.terms` prompts decoded as one row: each is a
            row of the KV cache, and `combine` merges their logits into the one next token they all take.
    Returns:
        One Generation per prompt. `n_new_tokens` counts the generated tokens including a final EOS.
    """
    import torch

    if batch_size < 1 or params.max_new_tokens < 1:
        raise ValueError(f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {params.max_new_tokens}")
    terms = combine.terms if combine else 1
    enc_all = [[tokenizer(render_prompt(tokenizer, q), add_special_tokens=False)["input_ids"] for q in p]
               for p in (prompts if combine else [[p] for p in prompts])]
    if any(len(e) != terms for e in enc_all):
        raise ValueError(f"every prompt needs {terms} terms for the combiner")
    enc = [e[0] for e in enc_all]  # a row's length and n_prompt_tokens are its first prompt's
    pending = sorted(range(len(enc)), key=lambda i: len(enc[i]), reverse=True)[::-1]  # pop() = longest
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    max_stop = max((len(s) for s in params.stop), default=0)
    results: list[Generation | None] = [None] * len(enc)
    new: dict[int, list[int]] = {}
    finished: list[int] = []

    def finish(i: int, stopped: bool) -> None:
        toks = new.pop(i)
        hit_eos = stopped and bool(toks) and toks[-1] in eos
        text, hit_stop = _cut(tokenizer.decode(toks[:-1] if hit_eos else toks, skip_special_tokens=True),
                              params.stop)
        done = stopped or hit_stop or bool(stop_fn and stop_fn(text))
        results[i] = Generation(text, len(enc[i]), len(toks), "stop" if done else "length")
        finished.append(i)

    def flush() -> None:
        if on_batch and finished:
            on_batch(list(finished), [results[i] for i in finished])  # type: ignore[misc]
        finished.clear()

    def stops(i: int) -> bool:
        toks = new[i]
        if toks[-1] in eos:
            return True
        if params.stop:  # a stop string can only end in the newest tokens: decode a short tail
            tail = tokenizer.decode(toks[-(max_stop + 8):], skip_special_tokens=True)
            if any(s in tail for s in params.stop):
                return True
        return bool(stop_fn and stop_fn(tokenizer.decode(toks, skip_special_tokens=True)))

    gen = torch.Generator(device=model.device).manual_seed(params.seed)
    rows: list[int | None] = []  # batch row -> input index (None: finished, still in the cache)
    cache = mask = last_pos = logits = None
    try:
        with torch.inference_mode():
            prefix = _shared_prefix(model, [e for es in enc_all for e in es])
            while pending or rows:
                # refill: when half the batch is done (or, for caches we cannot merge, all of it)
                if pending and (not rows or (len(rows) <= batch_size // 2 and _mergeable(cache))):
                    flush()
                    take = [pending.pop() for _ in range(min(batch_size - len(rows), len(pending)))]
                    c2, m2, p2, l2 = _prefill(model, [e for i in take for e in enc_all[i]], pad_id, prefix)
                    if rows:
                        mask = _merge(cache, mask, c2, m2)
                        last_pos, logits = torch.cat([last_pos, p2]), torch.cat([logits, l2])
                    else:
                        cache, mask, last_pos, logits = c2, m2, p2, l2
                    rows += take
                    new.update({i: [] for i in take})
                # next tokens for the live rows only (a finished row's slot is fed a pad until it leaves)
                live = [b for b, i in enumerate(rows) if i is not None]
                row_logits = combine(logits.view(len(rows), terms, -1)) if combine else logits
                picked = _next_tokens(row_logits if len(live) == len(rows) else row_logits[live], params, gen)
                for b, t in zip(live, picked.tolist()):
                    i = rows[b]
                    new[i].append(t)
                    if stops(i):
                        finish(i, stopped=True)
                        rows[b] = None
                    elif len(new[i]) >= params.max_new_tokens:
                        finish(i, stopped=False)
                        rows[b] = None
                if len(live) == len(rows):
                    tok = picked
                else:
                    tok = picked.new_full((len(rows),), pad_id)
                    tok[live] = picked
                dead = rows.count(None)
                if dead == len(rows):
                    rows = []
                    continue
                if dead and (dead >= max(2, len(rows) // _COMPACT_SHARE)
                             or (pending and len(rows) - dead <= batch_size // 2)):  # a refill is due
                    mask, last_pos, tok, rows = _compact(cache, mask, last_pos, tok, rows, terms)
                mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
                last_pos = last_pos + 1
                ids = tok.repeat_interleave(terms) if combine else tok
                logits = model(input_ids=ids[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                               **_cache_kwargs(model, cache), use_cache=True).logits[:, -1, :]
    except KeyboardInterrupt:  # rows that finished before the interrupt still reach on_batch (the caches)
        flush()
        raise
    flush()
    return results  # type: ignore[return-value]

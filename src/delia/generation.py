"""Batched generation with transformers: length-sorted batches, left padding, per-row stopping.

Shared by self-sampling (`delia sample`) and evaluation (`delia eval`). Rows are sorted by prompt length
so a batch wastes little on padding; a row stops at EOS, at a stop string, or when `stop_fn(text)` says
its answer is complete (e.g. the JSON object closed).

Why our own decode loop instead of `model.generate`: `generate` keeps computing every row of a batch
until the last one stops, so one long answer makes the whole batch pay for its length. Here a finished
row is dropped from the batch (and from the KV cache) at once, and when half the batch has finished the
next prompts are prefilled and merged into it (continuous batching, as vLLM does), so the batch stays
full. Prompts joining the batch are prefilled in passes of similar length (little padding), the prompt pass
computes logits for the last position only, the KV cache grows in place instead of being re-concatenated
every step, top-p looks at the 128 most likely tokens instead of sorting the vocabulary (exact; a full sort
only when the nucleus is wider), and stop strings are checked on a short decoded tail. Greedy decoding gives
the same tokens as `model.generate` (tested). docs/sampling.md says what each one saved when profiled.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Protocol

from delia.kvcache import growing_layer_class as _growing_layer_class

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


_TOP_P_CANDIDATES = 128  # top-p looks at this many most likely tokens first (exact: see _next_tokens)


def _next_tokens(logits: torch.Tensor, params: GenParams, gen: torch.Generator) -> torch.Tensor:
    """Greedy, or temperature + nucleus (top-p) sampling, on (rows, vocab) logits.

    Top-p keeps the most likely tokens until their mass reaches `top_p`. Sorting the whole vocabulary for that
    every step costs more than the model's forward pass on CPU (49k tokens x batch), so the nucleus is taken
    from the `_TOP_P_CANDIDATES` most likely tokens; rows whose candidates hold less than `top_p` of the mass
    (the nucleus may reach further) fall back to a full sort. The distribution sampled from is the same either way.
    """
    import torch

    if params.temperature <= 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / params.temperature, dim=-1)
    if params.top_p >= 1.0:
        return torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    k = min(_TOP_P_CANDIDATES, probs.shape[-1])
    top_p, top_i = probs.topk(k, dim=-1)  # sorted, most likely first
    wide = top_p.sum(-1) < params.top_p  # the nucleus may reach past the candidates: sort these rows fully
    if not wide.any():
        return _nucleus(top_p, top_i, params.top_p, gen)
    out = torch.empty(len(probs), dtype=torch.long, device=probs.device)
    if not wide.all():
        out[~wide] = _nucleus(top_p[~wide], top_i[~wide], params.top_p, gen)
    out[wide] = _nucleus(*probs[wide].sort(dim=-1, descending=True), params.top_p, gen)
    return out


def _nucleus(sorted_p: torch.Tensor, sorted_i: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Sample from the top-p nucleus of probabilities sorted in descending order (with their token ids)."""
    import torch

    # drop a token when the mass of the tokens ranked above it already reaches top_p (keeps >= 1 token)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    choice = torch.multinomial(sorted_p.masked_fill(drop, 0.0), 1, generator=gen)
    return sorted_i.gather(-1, choice).squeeze(-1)


_PREFILL_TOKENS = 4096  # most (padded) tokens in one prompt pass
_PREFILL_WASTE = 0.10  # most share of padding in one prompt pass


def _prefill_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Split consecutive rows into prompt passes with little padding.

    Left-padding a batch to its longest prompt wastes compute on pad tokens: 32 Alpaca one-shot prompts of
    64-376 tokens are more than half padding. Rows are taken in order (the caller sorts them by length) and a
    pass ends when adding the next row would make it more than `_PREFILL_WASTE` padding or longer than
    `_PREFILL_TOKENS` tokens.
    """
    groups: list[list[int]] = []
    for i, n in enumerate(lengths):
        if groups:
            trial = groups[-1] + [i]
            padded = max(lengths[j] for j in trial) * len(trial)
            if padded <= _PREFILL_TOKENS and padded - sum(lengths[j] for j in trial) <= _PREFILL_WASTE * padded:
                groups[-1] = trial
                continue
        groups.append([i])
    return groups


_PREFIX_MIN = 8  # shortest shared prompt start worth running once


def _shared_prefix(model, rows: list[list[int]]):
    """The prompt start shared by every row (the chat template's system prompt, a fixed instruction), run
    once: its keys/values are copied into each prompt pass instead of being recomputed per row (24 of the
    132 tokens of an average Alpaca one-shot prompt on SmolLM2). Returns (length, per-layer (keys, values))
    or None when there is nothing worth sharing or the cache layers cannot take it (sliding windows)."""
    import torch
    from transformers import DynamicCache

    if len(rows) < 2:
        return None
    first, shortest, p = rows[0], min(len(r) for r in rows), 0
    while p < shortest - 1 and all(r[p] == first[p] for r in rows):  # every row keeps >= 1 token of its own
        p += 1
    if p < _PREFIX_MIN or not _mergeable(_growing(DynamicCache(config=model.config))):
        return None
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([first[:p]], device=model.device), past_key_values=cache, use_cache=True,
          logits_to_keep=1)
    return p, [(layer.keys, layer.values) for layer in cache.layers]


def _prefill(model, rows: list[list[int]], pad_id: int, prefix=None):
    """The prompt pass for `rows`; returns (cache, attention mask, last positions, next-token logits).

    Runs one pass per group of similar lengths (`_prefill_groups`) and joins the caches, when the cache
    layers can be joined (plain full-attention layers); otherwise one pass. With a `prefix` from
    `_shared_prefix`, only the tokens after it are computed.
    """
    import torch
    from transformers import DynamicCache

    skip = prefix[0] if prefix else 0
    groups = _prefill_groups([len(r) - skip for r in rows])
    if len(groups) == 1 or not _mergeable(_growing(DynamicCache(config=model.config))):
        return _prefill_pass(model, rows, pad_id, prefix)
    parts = [_prefill_pass(model, [rows[i] for i in g], pad_id, prefix) for g in groups]
    mask = _merge_all([c for c, *_ in parts], [m for _, m, *_ in parts])
    return parts[0][0], mask, torch.cat([p for *_, p, _ in parts]), torch.cat([lg for *_, lg in parts])


def _prefill_pass(model, rows: list[list[int]], pad_id: int, prefix=None):
    """One prompt pass for `rows`; returns (cache, attention mask, last positions, next-token logits).

    Rows are left-padded so the next token follows each prompt directly. With a shared prefix of length p the
    cache starts with its keys/values for every row, then padding, then each row's own tokens:
    the mask is [1]*p + [0]*pad + [1]*own and positions continue from p.
    """
    import torch
    from transformers import DynamicCache

    skip = prefix[0] if prefix else 0
    own = [e[skip:] for e in rows]
    n, width = len(own), max(len(e) for e in own)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for r, e in enumerate(own):
        ids[r, width - len(e):] = torch.tensor(e)
        mask[r, width - len(e):] = 1
    ids, mask = ids.to(model.device), mask.to(model.device)
    cache = _growing(DynamicCache(config=model.config))
    if prefix:
        mask = torch.cat([mask.new_ones((n, skip)), mask], dim=1)
        for layer, (k, v) in zip(cache.layers, prefix[1]):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, past_key_values=cache, use_cache=True,
                logits_to_keep=1)
    return cache, mask, pos[:, -1], out.logits[:, -1, :]


_GROWING = None


def _growing(cache):
    """Swap the plain DynamicLayers of a fresh DynamicCache for in-place growing ones (others are kept)."""
    global _GROWING
    from transformers.cache_utils import DynamicLayer

    _GROWING = _GROWING or _growing_layer_class()
    cache.layers = [_GROWING() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


def _mergeable(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer or type(layer) is _GROWING for layer in cache.layers)


def _pad_left(t: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    if n == 0:
        return t
    shape = list(t.shape)
    shape[dim] = n
    import torch

    return torch.cat([t.new_zeros(shape), t], dim=dim)


def _merge(cache, mask: torch.Tensor, cache_b, mask_b: torch.Tensor) -> torch.Tensor:
    """Append the rows of (cache_b, mask_b) to (cache, mask), left-padding the shorter side; returns the mask."""
    return _merge_all([cache, cache_b], [mask, mask_b])


def _merge_all(caches: list, masks: list[torch.Tensor]) -> torch.Tensor:
    """Stack the rows of all caches into the first one (one copy per layer), left-padding each to the widest;
    returns the joined mask."""
    import torch

    width = max(m.shape[1] for m in masks)
    for layers in zip(*(c.layers for c in caches)):
        keys = [_pad_left(layer.keys, width - m.shape[1], 2) for layer, m in zip(layers, masks)]
        values = [_pad_left(layer.values, width - m.shape[1], 2) for layer, m in zip(layers, masks)]
        layers[0].keys, layers[0].values = torch.cat(keys, dim=0), torch.cat(values, dim=0)
    return torch.cat([_pad_left(m, width - m.shape[1], 1) for m in masks], dim=0)


def _trim(cache, mask: torch.Tensor) -> torch.Tensor:
    """Drop leading columns that are padding for every row left (after long rows have finished)."""
    used = (mask.sum(0) > 0).nonzero()
    c = int(used[0]) if len(used) else 0
    if c > 0:
        for layer in cache.layers:
            layer.keys, layer.values = layer.keys[:, :, c:], layer.values[:, :, c:]
        mask = mask[:, c:]
    return mask


def generate(model, tokenizer, prompts: Sequence[Prompt], params: GenParams, batch_size: int = 16,
             stop_fn: Callable[[str], bool] | None = None,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None,
             combine: Combiner | None = None) -> list[Generation]:
    """Generate one completion per prompt, in input order.

    Rows are taken longest prompt first. A finished row leaves the batch (and the KV cache) at once; when
    half the batch has finished, the next prompts are prefilled and merged into the running batch
    (continuous batching), so the batch stays full without waiting for its longest answer.

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
    rows: list[int] = []  # batch row -> input index
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
                tok = _next_tokens(combine(logits.view(len(rows), terms, -1)) if combine else logits, params, gen)
                keep = []
                for b, t in enumerate(tok.tolist()):
                    i = rows[b]
                    new[i].append(t)
                    if stops(i):
                        finish(i, stopped=True)
                    elif len(new[i]) >= params.max_new_tokens:
                        finish(i, stopped=False)
                    else:
                        keep.append(b)
                if not keep:
                    rows = []
                    continue
                if len(keep) < len(rows):  # drop finished rows from the batch and the cache
                    sel = torch.tensor([b * terms + j for b in keep for j in range(terms)], device=model.device)
                    cache.batch_select_indices(sel)
                    tok, mask, last_pos = tok[keep], mask[sel], last_pos[sel]
                    rows = [rows[b] for b in keep]
                    if _mergeable(cache):
                        mask = _trim(cache, mask)
                mask = torch.cat([mask, mask.new_ones((len(mask), 1))], dim=1)
                last_pos = last_pos + 1
                logits = model(input_ids=tok.repeat_interleave(terms)[:, None], attention_mask=mask,
                               position_ids=last_pos[:, None], past_key_values=cache, use_cache=True).logits[:, -1, :]
    except KeyboardInterrupt:  # rows that finished before the interrupt still reach on_batch (the caches)
        flush()
        raise
    flush()
    return results  # type: ignore[return-value]

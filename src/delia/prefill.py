"""Prompt passes for the decode loop in `delia.generation`: similar lengths share a pass, a prompt start shared
by every row is computed once, and the passes' KV caches are joined into one batch."""

from __future__ import annotations

from collections.abc import Sequence

from delia.kvcache import cache_kwargs, growing, merge_all, mergeable


PREFILL_TOKENS = 4096  # most (padded) tokens in one prompt pass
PREFILL_WASTE = 0.10  # most share of padding in one prompt pass


def prefill_groups(lengths: Sequence[int]) -> list[list[int]]:
    """Split consecutive rows into prompt passes with little padding.

    Left-padding a batch to its longest prompt wastes compute on pad tokens: 32 Alpaca one-shot prompts of
    64-376 tokens are more than half padding. Rows are taken in order (the caller sorts them by length) and a
    pass ends when adding the next row would make it more than `PREFILL_WASTE` padding or longer than
    `PREFILL_TOKENS` tokens.
    """
    groups: list[list[int]] = []
    for i, n in enumerate(lengths):
        if groups:
            trial = groups[-1] + [i]
            padded = max(lengths[j] for j in trial) * len(trial)
            if padded <= PREFILL_TOKENS and padded - sum(lengths[j] for j in trial) <= PREFILL_WASTE * padded:
                groups[-1] = trial
                continue
        groups.append([i])
    return groups


PREFIX_MIN = 8  # shortest shared prompt start worth running once


def shared_prefix(model, rows: list[list[int]]):
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
    if p < PREFIX_MIN or not mergeable(growing(DynamicCache(config=model.config))):
        return None
    cache = DynamicCache(config=model.config)
    model(input_ids=torch.tensor([first[:p]], device=model.device), **cache_kwargs(model, cache), use_cache=True,
          logits_to_keep=1)
    return p, [(layer.keys, layer.values) for layer in cache.layers]


def prefill(model, rows: list[list[int]], pad_id: int, prefix=None):
    """The prompt pass for `rows`; returns (cache, attention mask, last positions, next-token logits).

    Runs one pass per group of similar lengths (`prefill_groups`) and joins the caches, when the cache
    layers can be joined (plain full-attention layers); otherwise one pass. With a `prefix` from
    `shared_prefix`, only the tokens after it are computed.
    """
    import torch
    from transformers import DynamicCache

    skip = prefix[0] if prefix else 0
    groups = prefill_groups([len(r) - skip for r in rows])
    if len(groups) == 1 or not mergeable(growing(DynamicCache(config=model.config))):
        return prefill_pass(model, rows, pad_id, prefix)
    parts = [prefill_pass(model, [rows[i] for i in g], pad_id, prefix) for g in groups]
    mask = merge_all([c for c, *_ in parts], [m for _, m, *_ in parts])
    return parts[0][0], mask, torch.cat([p for *_, p, _ in parts]), torch.cat([lg for *_, lg in parts])


def prefill_pass(model, rows: list[list[int]], pad_id: int, prefix=None):
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
    cache = growing(DynamicCache(config=model.config))
    if prefix:
        mask = torch.cat([mask.new_ones((n, skip)), mask], dim=1)
        for layer, (k, v) in zip(cache.layers, prefix[1]):
            layer.lazy_initialization(k, v)
            layer.keys, layer.values = k.expand(n, -1, -1, -1).contiguous(), v.expand(n, -1, -1, -1).contiguous()
    pos = (mask.cumsum(-1) - 1).clamp(min=0)[:, skip:]
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, **cache_kwargs(model, cache), use_cache=True,
                logits_to_keep=1)
    return cache, mask, pos[:, -1], out.logits[:, -1, :]

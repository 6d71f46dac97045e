"""Controlled text generation by language-model arithmetic (Dekoninck et al. 2023; baselines.md §6).

A formula F = sum_i w_i * log p_i(. | prompt_i, y<t) is divided by its norm sum_i w_i and renormalised
(F - logsumexp F), as in eth-sri/language-model-arithmetic. The CTG baseline uses
F = (1 + lam) * M_desc - lam * M_task: the same model given the format description as a system prompt
(M_desc) and without it (M_task); lam = 0 is plain greedy decoding of M_desc. Each prompt is a row of one
batched KV cache and all of an example's rows extend the same generated suffix. The library itself is not a dependency: this loop is the
part of it the baseline needs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from delia.generation import Generation, Prompt, render_prompt


def combine(logps: Sequence[torch.Tensor], weights: Sequence[float]) -> torch.Tensor:
    """Normalised log-probabilities of sum_i w_i * logps_i / sum_i w_i (the library's formula semantics).

    Args:
        logps: log-probabilities over the vocabulary, one tensor per term (same shape).
        weights: the terms' coefficients; their sum (the norm) must not be 0.
    Returns:
        log-probabilities (logsumexp over the last dim is 0).
    """
    norm = float(sum(weights))
    if abs(norm) < 1e-12:
        raise ValueError(f"the formula's coefficients sum to 0 ({list(weights)}): it cannot be normalised")
    f = sum(w * lp for w, lp in zip(weights, logps)) / norm
    return f - torch.logsumexp(f, dim=-1, keepdim=True)


def guidance_weights(lam: float) -> tuple[float, float]:
    """(w_desc, w_task) of F = (1 + lam) M_desc - lam M_task (norm 1)."""
    return 1.0 + lam, -lam


def desc_prompt(prompt: list[dict[str, str]], description: str) -> list[dict[str, str]]:
    """M_desc's prompt: the description as the system turn, then the same conversation."""
    return [{"role": "system", "content": description}, *[m for m in prompt if m["role"] != "system"]]


@torch.no_grad()
def arithmetic_generate(model, tokenizer, prompts: Sequence[Sequence[Prompt]], weights: Sequence[float],
                        max_new_tokens: int = 256, stop_fn: Callable[[str], bool] | None = None) -> list[Generation]:
    """Greedy decoding from the combined distribution of several prompts of one model, all examples at once.

    Every (example, term) prompt is one row of a batch (prefilled by `delia.generation`'s grouped prompt
    pass); each step combines the terms' log-probabilities per example, and an example's rows leave the batch
    and its KV cache when it stops.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        prompts: per example, one prompt per formula term (chat messages or text).
        weights: one coefficient per term.
        max_new_tokens: budget per example.
        stop_fn: stops an example once its decoded text is complete (e.g. the JSON object closed).
    Returns:
        One Generation per example, in input order (n_prompt_tokens counts the first term's prompt; a final
        EOS is not counted).
    """
    from delia.generation import _eos_ids, _mergeable, _prefill, _trim

    n_terms = len(weights)
    for terms in prompts:
        if len(terms) != n_terms:
            raise ValueError(f"{len(terms)} prompts for {n_terms} weights")
    if not prompts:
        return []
    enc = [[tokenizer(render_prompt(tokenizer, p), add_special_tokens=False)["input_ids"] for p in terms]
           for terms in prompts]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    eos = _eos_ids(model, tokenizer)
    cache, mask, last_pos, logits = _prefill(model, [e for terms in enc for e in terms], pad_id)  # row i*T + j
    active = list(range(len(prompts)))
    new: dict[int, list[int]] = {i: [] for i in active}
    out: list[Generation | None] = [None] * len(prompts)

    def done(i: int, finish: str) -> None:
        toks = new.pop(i)
        out[i] = Generation(tokenizer.decode(toks, skip_special_tokens=True), len(enc[i][0]), len(toks), finish)

    while True:
        logps = torch.log_softmax(logits.float(), dim=-1).view(len(active), n_terms, -1)
        nxt = combine(list(logps.unbind(1)), weights).argmax(-1).tolist()
        keep = []
        for a, (i, t) in enumerate(zip(active, nxt)):
            if t in eos:
                done(i, "stop")
                continue
            new[i].append(t)
            if stop_fn is not None and stop_fn(tokenizer.decode(new[i], skip_special_tokens=True)):
                done(i, "stop")
            elif len(new[i]) >= max_new_tokens:
                done(i, "length")
            else:
                keep.append(a)
        if not keep:
            return out  # type: ignore[return-value]
        if len(keep) < len(active):  # finished examples leave the batch and the cache
            sel = torch.tensor([a * n_terms + j for a in keep for j in range(n_terms)], device=mask.device)
            cache.batch_select_indices(sel)
            mask, last_pos = mask[sel], last_pos[sel]
            if _mergeable(cache):
                mask = _trim(cache, mask)
            active = [active[a] for a in keep]
        tok = torch.tensor([nxt[a] for a in keep], device=mask.device).repeat_interleave(n_terms)
        mask = torch.cat([mask, mask.new_ones((len(tok), 1))], dim=1)
        last_pos = last_pos + 1
        logits = model(input_ids=tok[:, None], attention_mask=mask, position_ids=last_pos[:, None],
                       past_key_values=cache, use_cache=True).logits[:, -1, :]

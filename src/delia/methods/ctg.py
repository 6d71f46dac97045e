"""Controlled text generation by language-model arithmetic (Dekoninck et al. 2023; baselines.md §6).

A formula F = sum_i w_i * log p_i(. | prompt_i, y<t) is divided by its norm sum_i w_i and renormalised
(F - logsumexp F), as in eth-sri/language-model-arithmetic. The CTG baseline uses
F = (1 + lam) * M_desc - lam * M_task: the same model given the format description as a system prompt
(M_desc) and without it (M_task); lam = 0 is plain greedy decoding of M_desc. Each prompt keeps its own KV
cache and both extend the same generated suffix. The library itself is not a dependency: this loop is the
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
    """Greedy decoding from the combined distribution of several prompts of one model.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        prompts: per example, one prompt per formula term (chat messages or text).
        weights: one coefficient per term.
        max_new_tokens: budget per example.
        stop_fn: stops an example once its decoded text is complete (e.g. the JSON object closed).
    Returns:
        One Generation per example (n_prompt_tokens counts the first term's prompt).
    """
    eos = {tokenizer.eos_token_id, *([model.generation_config.eos_token_id]
                                     if isinstance(model.generation_config.eos_token_id, int)
                                     else model.generation_config.eos_token_id or [])} - {None}
    device = next(model.parameters()).device
    out = []
    for terms in prompts:
        if len(terms) != len(weights):
            raise ValueError(f"{len(terms)} prompts for {len(weights)} weights")
        ids = [tokenizer(render_prompt(tokenizer, p), add_special_tokens=False, return_tensors="pt")["input_ids"]
               .to(device) for p in terms]
        caches: list = [None] * len(terms)
        step_inputs = ids
        new: list[int] = []
        finish = "length"
        for _ in range(max_new_tokens):
            logps = []
            for j, x in enumerate(step_inputs):
                o = model(input_ids=x, past_key_values=caches[j], use_cache=True)
                caches[j] = o.past_key_values
                logps.append(torch.log_softmax(o.logits[0, -1].float(), dim=-1))
            nxt = int(combine(logps, weights).argmax())
            if nxt in eos:
                finish = "stop"
                break
            new.append(nxt)
            if stop_fn is not None and stop_fn(tokenizer.decode(new, skip_special_tokens=True)):
                finish = "stop"
                break
            step_inputs = [torch.tensor([[nxt]], device=device)] * len(terms)
        out.append(Generation(tokenizer.decode(new, skip_special_tokens=True), int(ids[0].shape[1]), len(new),
                              finish))
    return out

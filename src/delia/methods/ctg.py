"""Controlled text generation by language-model arithmetic (Dekoninck et al. 2023; baselines.md §6).

A formula F = sum_i w_i * log p_i(. | prompt_i, y<t) is divided by its norm sum_i w_i and renormalised
(F - logsumexp F), as in eth-sri/language-model-arithmetic. The CTG baseline uses
F = (1 + lam) * M_desc - lam * M_task: the same model given the format description as a system prompt
(M_desc) and without it (M_task); lam = 0 is plain greedy decoding of M_desc. The formula is a logits combiner
(`Arithmetic`) over the shared decode loop of `delia.generation`: each prompt is a row of one batched KV cache
and all of an example's rows extend the same generated suffix. The library itself is not a dependency.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from delia.generation import Generation, Prompt


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


class Arithmetic:
    """The formula as a `delia.generation.Combiner`: per row, its terms' logits -> the formula's log-probabilities.

    Args:
        weights: one coefficient per term (the row's prompts, in order).
    """

    def __init__(self, weights: Sequence[float]) -> None:
        self.weights, self.terms = tuple(weights), len(weights)

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        return combine(list(torch.log_softmax(logits.float(), dim=-1).unbind(1)), self.weights)


def arithmetic_generate(model, tokenizer, prompts: Sequence[Sequence[Prompt]], weights: Sequence[float],
                        max_new_tokens: int = 256, stop_fn: Callable[[str], bool] | None = None,
                        batch_size: int | None = None, on_batch: Callable | None = None,
                        temperature: float = 0.0, seed: int = 0) -> list[Generation]:
    """Decoding from the combined distribution of several prompts of one model (greedy by default).

    The shared decode loop (`delia.generation.generate`) with the formula as its combiner: every
    (example, term) prompt is one row of the KV cache, all of an example's rows take the token drawn from the
    formula, and an example's rows leave the batch when it stops.

    Args:
        model, tokenizer: a causal LM and its tokenizer.
        prompts: per example, one prompt per formula term (chat messages or text).
        weights: one coefficient per term.
        max_new_tokens: budget per example.
        stop_fn: stops an example once its decoded text is complete (e.g. the JSON object closed).
        batch_size: examples per forward pass (each is `len(weights)` rows); None = all at once.
        on_batch: called with (example indices, generations) as examples finish.
        temperature, seed: sampling from the formula (0 = greedy, the baseline's setting).
    Returns:
        One Generation per example, in input order (n_prompt_tokens counts the first term's prompt;
        n_new_tokens counts a final EOS, as `generate` does).
    """
    from delia.generation import GenParams, generate

    if not prompts:
        return []
    params = GenParams(max_new_tokens=max_new_tokens, temperature=temperature, seed=seed)
    return generate(model, tokenizer, prompts, params, batch_size=batch_size or len(prompts), stop_fn=stop_fn,
                    on_batch=on_batch, combine=Arithmetic(weights))

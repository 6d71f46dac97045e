"""Batched generation with transformers: length-sorted batches, left padding, per-row stopping.

Shared by self-sampling (`delia sample`) and evaluation (`delia eval`). Rows are sorted by prompt length
so a batch wastes little on padding; a row stops at EOS, at a stop string, or when `stop_fn(text)` says
its answer is complete (e.g. the JSON object closed); the batch ends when every row has stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

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


def render_prompt(tokenizer, prompt: Prompt) -> str:
    """Chat messages -> the model's chat-template text with the generation prompt; strings pass through."""
    if isinstance(prompt, str):
        return prompt
    return tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)


class _RowStop(StoppingCriteria):
    """Per-row stop: a stop string appeared, or `stop_fn` accepts the text so far."""

    def __init__(self, tokenizer, prompt_len: int, stop: Sequence[str], stop_fn: Callable[[str], bool] | None):
        self.tokenizer, self.prompt_len, self.stop, self.stop_fn = tokenizer, prompt_len, list(stop), stop_fn

    def __call__(self, input_ids: torch.LongTensor, scores, **kwargs) -> torch.BoolTensor:
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new = input_ids[:, self.prompt_len:]
        for i, row in enumerate(new):
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            done[i] = any(s in text for s in self.stop) or bool(self.stop_fn and self.stop_fn(text))
        return done


def _cut(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cut = min((text.index(s) for s in stop if s in text), default=None)
    return (text[:cut], True) if cut is not None else (text, False)


@torch.inference_mode()
def generate(model, tokenizer, prompts: Sequence[Prompt], params: GenParams, batch_size: int = 16,
             stop_fn: Callable[[str], bool] | None = None,
             on_batch: Callable[[list[int], list[Generation]], None] | None = None) -> list[Generation]:
    """Generate one completion per prompt, in input order.

    Args:
        prompts: chat message lists (rendered with the chat template) or already-rendered strings.
        params: decoding parameters.
        batch_size: rows per forward pass.
        stop_fn: optional per-row predicate on the generated text; True ends that row ("stop").
        on_batch: called after each batch with (input indices, generations), e.g. to append to a cache.
    Returns:
        One Generation per prompt.
    """
    texts = [render_prompt(tokenizer, p) for p in prompts]
    enc = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    order = sorted(range(len(texts)), key=lambda i: len(enc[i]), reverse=True)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[Generation | None] = [None] * len(texts)
    sample = params.temperature > 0
    cfg_eos = model.generation_config.eos_token_id
    eos_ids = {tokenizer.eos_token_id, *(cfg_eos if isinstance(cfg_eos, list) else [cfg_eos])} - {None}
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start:start + batch_size]
        width = max(len(enc[i]) for i in idx)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        for r, i in enumerate(idx):  # left padding: the next token follows the prompt directly
            ids[r, width - len(enc[i]):] = torch.tensor(enc[i])
            mask[r, width - len(enc[i]):] = 1
        ids, mask = ids.to(model.device), mask.to(model.device)
        stopping = StoppingCriteriaList()
        if params.stop or stop_fn:
            stopping.append(_RowStop(tokenizer, width, params.stop, stop_fn))
        if sample:
            torch.manual_seed(params.seed + b)
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=params.max_new_tokens, do_sample=sample,
            temperature=params.temperature if sample else None, top_p=params.top_p if sample else None,
            top_k=None, pad_token_id=pad_id, stopping_criteria=stopping,
        )
        gens = []
        for r, i in enumerate(idx):
            new = out[r, width:].tolist()
            n = next((k + 1 for k, t in enumerate(new) if t in eos_ids), None)
            hit_eos = n is not None
            new = new[:n] if hit_eos else new
            text, hit_stop = _cut(tokenizer.decode(new, skip_special_tokens=True), params.stop)
            finished = hit_eos or hit_stop or bool(stop_fn and stop_fn(text))
            # count generated tokens without the pad tail of rows that stopped before the batch did
            n_new = len(new) if hit_eos else sum(1 for t in new if t != pad_id) or len(new)
            gens.append(Generation(text, len(enc[i]), n_new, "stop" if finished else "length"))
            results[i] = gens[-1]
        if on_batch:
            on_batch(idx, gens)
    return results  # type: ignore[return-value]

"""Prompt-length guard for generation: a prompt longer than the model can take is rejected with `FILE:LINE`
before generation starts, or (`long_prompts: truncate`) cut in the middle of its longest turn.

Why: a prompt past the model's context is not an error to transformers: one 1 MB line made `delia sample`
and `delia eval` try to allocate 40-160 GB (attention over ~250k positions) and die. Training already
truncates rows at `max_length` and reports them.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

from delia.data.records import DataError, Problem
from delia.generation import Prompt, render_prompt

log = logging.getLogger(__name__)

MODES = ("error", "truncate")
MARK = " [...] "  # stands for the tokens cut from the middle of a turn


def context_length(model_path: str) -> int | None:
    """The model's context (max_position_embeddings), or None when its config does not say."""
    from transformers import AutoConfig

    from delia.models import ensure_local

    try:
        cfg = AutoConfig.from_pretrained(ensure_local(model_path))
    except (OSError, ValueError):
        return None
    return getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)


def prompt_budget(max_prompt_tokens: int | None, context: int | None, max_new_tokens: int) -> int | None:
    """The prompt tokens allowed: `max_prompt_tokens`, else the context minus the generation budget."""
    if max_prompt_tokens is not None:
        return max_prompt_tokens
    return max(context - max_new_tokens, 1) if context else None


def _count(tokenizer, prompt: Prompt) -> int:
    return len(tokenizer(render_prompt(tokenizer, prompt), add_special_tokens=False)["input_ids"])


def _cut_middle(tokenizer, text: str, drop: int) -> str | None:
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    keep = len(ids) - drop
    if keep < 2:
        return None
    head = keep // 2
    return tokenizer.decode(ids[:head]) + MARK + tokenizer.decode(ids[len(ids) - (keep - head):])


def fit_prompt(tokenizer, prompt: Prompt, limit: int) -> tuple[Prompt, int] | None:
    """(prompt cut to at most `limit` tokens, tokens removed), or None when cutting its longest turn cannot fit.

    Only the longest message (or the string) is cut, in its middle, so the instruction that usually ends a
    turn and the chat template's own tokens survive.
    """
    n0 = n = _count(tokenizer, prompt)
    out = copy.deepcopy(prompt)
    for _ in range(4):  # re-tokenising across the cut can differ by a token or two: retry with more margin
        if n <= limit:
            return out, n0 - n
        drop = n - limit + len(tokenizer(MARK, add_special_tokens=False)["input_ids"]) + 2
        if isinstance(out, str):
            cut = _cut_middle(tokenizer, out, drop)
            if cut is None:
                return None
            out = cut
        else:
            turn = max(out, key=lambda m: len(m["content"]))
            cut = _cut_middle(tokenizer, turn["content"], drop)
            if cut is None:
                return None
            turn["content"] = cut
        n = _count(tokenizer, out)
    return (out, n0 - n) if n <= limit else None


def guard_prompts(tokenizer, prompts: Sequence[Prompt], where: Sequence[str], limit: int | None,
                  mode: str | None) -> tuple[list[Prompt], dict[int, int]]:
    """Check every prompt against `limit` tokens.

    Args:
        where: `FILE:LINE` of each prompt's source row, for the messages.
        mode: 'error' (default when None): raise for every prompt over the limit; 'truncate': cut them.
    Returns:
        (prompts, {index: tokens cut}) - the prompts unchanged where they fit.
    Raises:
        DataError: prompts over the limit (mode error), or ones no cut can fit (mode truncate).
    """
    mode = mode or "error"
    if limit is None:
        return list(prompts), {}
    out, cut, problems = list(prompts), {}, []
    for i, p in enumerate(prompts):
        n = _count(tokenizer, p)
        if n <= limit:
            continue
        fitted = fit_prompt(tokenizer, p, limit) if mode == "truncate" else None
        if fitted is None:
            file, _, line = where[i].rpartition(":")
            how = "it does not fit even with its longest turn cut" if mode == "truncate" else (
                "set long_prompts=truncate to cut it, or max_prompt_tokens to allow more")
            problems.append(Problem(file or where[i], int(line) if line.isdigit() else 0,
                                    f"the prompt has {n} tokens, over the limit of {limit} (the model's context "
                                    f"minus max_new_tokens, or max_prompt_tokens); {how}", "prompt"))
            continue
        out[i], cut[i] = fitted
    if problems:
        raise DataError(problems)
    if cut:
        log.warning("%d prompt(s) over %d tokens were cut in the middle of their longest turn (first: %s)",
                    len(cut), limit, where[next(iter(cut))])
    return out, cut

"""Summary statistics of an example file: rows, roles, token-length percentiles."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from delia.data.records import Record


def percentiles(values: list[int], qs: tuple[int, ...] = (50, 90, 99)) -> dict[str, float]:
    """{'p50':..., 'p90':..., 'p99':..., 'max':..., 'mean':...} of `values` (zeros when empty)."""
    if not values:
        return {**{f"p{q}": 0.0 for q in qs}, "max": 0.0, "mean": 0.0}
    arr = np.asarray(values)
    out = {f"p{q}": float(np.percentile(arr, q)) for q in qs}
    out.update(max=float(arr.max()), mean=float(arr.mean()))
    return out


def data_stats(records: list[Record], tokenizer=None) -> dict[str, Any]:
    """Rows, format, turn roles and (with a tokenizer) token lengths of prompts, responses and whole chats.

    The whole-chat length uses the tokenizer's chat template, i.e. what training actually sees.
    """
    roles = Counter(t["role"] for r in records for t in r.messages)
    out: dict[str, Any] = {
        "rows": len(records),
        "formats": dict(Counter(r.fmt for r in records)),
        "roles": dict(roles),
        "with_response": sum(r.response is not None for r in records),
    }
    if tokenizer is not None:
        def n(text: str) -> int:
            return len(tokenizer(text, add_special_tokens=False)["input_ids"])

        prompt = [sum(n(t["content"]) for t in r.prompt_messages) for r in records]
        resp = [n(r.response) for r in records if r.response is not None]
        full = [len(tokenizer.apply_chat_template(r.messages, tokenize=True, return_dict=True)["input_ids"])
                for r in records]
        out["tokens"] = {"prompt": percentiles(prompt), "response": percentiles(resp), "chat": percentiles(full)}
        out["tokens_total"] = int(sum(full))
    return out

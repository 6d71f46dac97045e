"""The generation budget when none is configured: taken from the data, so the budget never decides a result.

Rule: max(256, ceil(2 x p99)) where p99 is the 99th percentile (numpy's linear interpolation) of the gold
replies' token lengths under the model's tokenizer. Gold replies are those of the evaluated rows (chat rows,
translation references), else the assistant turns of the task's training rows (`Task.gold_fallback`; halu:
`halu.seen_file`'s downstream rows). An explicit `generation.max_new_tokens` always wins.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from delia.config import ConfigError

log = logging.getLogger(__name__)
FLOOR = 256
FACTOR = 2.0
QUANTILE = 99.0


def training_replies(path: str | Path) -> list[str]:
    """Assistant turns of the downstream task rows of a training file (diverse rows of a built set excluded)."""
    from delia.data import read_records
    from delia.evaluation.instructions import SEP

    out = []
    for rec in read_records(path):
        if rec.extra.get("source", "downstream") != "downstream" or not rec.response:
            continue
        users = [m["content"] for m in rec.prompt_messages if m["role"] == "user"]
        if users and SEP in users[-1]:
            out.append(rec.response)
    return out


def gold_replies(rows: list[Any], fallback: str | None) -> tuple[list[str], str]:
    """(replies, where they came from): one per evaluated example when rows carry gold, else training replies."""
    by_example = {r.example_id: r.gold for r in rows if r.gold}
    if by_example:
        return list(by_example.values()), "gold replies of the evaluated examples"
    if fallback:
        try:  # read_records resolves the path (a missing file is not an error here: the floor applies)
            replies = training_replies(fallback)
        except (FileNotFoundError, ConfigError):
            replies = []
        if replies:
            return replies, f"assistant turns of {fallback}"
    return [], "none found"


def choose(lengths: list[int], floor: int = FLOOR, factor: float = FACTOR) -> dict[str, Any]:
    """The budget for reply token `lengths` (the floor when there are none), with the numbers behind it."""
    if not lengths:
        return {"max_new_tokens": floor, "n_gold": 0, "p99_gold_tokens": None, "max_gold_tokens": None}
    p99 = float(np.percentile(np.asarray(lengths, dtype=np.float64), QUANTILE))
    return {"max_new_tokens": max(floor, math.ceil(factor * p99 - 1e-9)), "n_gold": len(lengths),
            "p99_gold_tokens": p99, "max_gold_tokens": int(max(lengths))}


def resolve(configured: int | None, tok, rows: list[Any], fallback: str | None,
            floor: int | None = None) -> dict[str, Any]:
    """The budget to generate with, recorded in metrics.json["budget"].

    Args:
        configured: `generation.max_new_tokens` (None = from the data).
        tok: the model's tokenizer (lengths are counted in its tokens).
        rows: the evaluation rows (`example_id`, `gold`).
        fallback: the task's training file whose replies are used when the rows carry no gold
            (`Task.gold_fallback`).
        floor: the smallest budget the rule may choose (`generation.budget_floor`; None = FLOOR).
    """
    if configured is not None:
        return {"max_new_tokens": configured, "source": "config"}
    floor = floor or FLOOR
    replies, where = gold_replies(rows, fallback)
    lengths = [len(tok(r, add_special_tokens=False)["input_ids"]) for r in replies]
    info = {**choose(lengths, floor=floor), "source": "data", "gold_from": where,
            "rule": f"max({floor}, ceil({FACTOR:g} x p{QUANTILE:g} of gold reply tokens))"}
    if not lengths:
        log.warning("no gold replies to size the generation budget from; using %d tokens", floor)
    return info

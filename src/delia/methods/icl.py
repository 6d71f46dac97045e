"""In-context learning (baselines.md §8): k training rows as earlier user/assistant turns before the prompt."""

from __future__ import annotations

import random
from collections.abc import Sequence

from delia.data import Record


def pick_demos(pool: Sequence[Record], k: int, seed: int | str, exclude_id: str | None = None) -> list[Record]:
    """k distinct demonstrations from `pool` (seeded), never the example itself.

    Args:
        pool: training rows with a response.
        k: how many (the spec: 2 on CPU, 3 on GPU for the JSON task; 3/5 for translation).
        seed: seed of the draw (e.g. f"{seed}:{example id}", one draw per example).
        exclude_id: the evaluated example's id (and text) must not be a demonstration.
    """
    candidates = [r for r in pool if r.id != exclude_id]
    if k > len(candidates):
        raise ValueError(f"{k} demonstrations asked for, but the pool has {len(candidates)} rows")
    return random.Random(str(seed)).sample(candidates, k)


def icl_prompt(demos: Sequence[Record], prompt: list[dict[str, str]]) -> list[dict[str, str]]:
    """[user_1, assistant_1, ..., user_k, assistant_k, *prompt]: demonstrations as earlier chat turns."""
    turns: list[dict[str, str]] = []
    for d in demos:
        user = [m for m in d.prompt_messages if m["role"] == "user"]
        if not user or d.response is None:
            raise ValueError(f"{d.where}: a demonstration needs a user turn and a response")
        turns += [{"role": "user", "content": user[-1]["content"]}, {"role": "assistant", "content": d.response}]
    return turns + list(prompt)

"""How many diverse rows, which ones, and in what order: pure functions of counts and a seeded RNG."""

from __future__ import annotations

import math
import random
from fractions import Fraction
from typing import Literal

Schedule = Literal["shuffle", "interleave"]


def diverse_count(ratio: float, n_downstream: int) -> tuple[int, bool]:
    """floor(ratio x n_downstream), computed exactly on the decimal the user wrote (0.29 x 100 = 29, not 28).

    Returns:
        (count, exact): exact is False when the product was not a whole number.
    """
    prod = Fraction(str(ratio)) * n_downstream
    return math.floor(prod), prod.denominator == 1


def select(n_usable: int, n_needed: int, rng: random.Random) -> list[tuple[int, int]]:
    """(usable-row index, repeat number) for each diverse slot, in random order.

    With enough rows this is a seeded sample without replacement (the authors' `shuffle(42).select(n)`).
    With fewer, every row is used once per full pass (repeat 0, 1, ...) and the remainder is a sample.
    """
    out: list[tuple[int, int]] = []
    rep = 0
    while n_needed - len(out) >= n_usable > 0:
        out += [(i, rep) for i in rng.sample(range(n_usable), n_usable)]
        rep += 1
    out += [(i, rep) for i in rng.sample(range(n_usable), n_needed - len(out))]
    return out


def order(n_downstream: int, n_diverse: int, schedule: Schedule, rng: random.Random) -> list[tuple[bool, int]]:
    """The output order as (is_downstream, index) pairs; every downstream row and diverse slot exactly once.

    shuffle: one uniform random permutation of all rows (the authors' "concatenate and shuffle").
    interleave: each downstream row (in random order) followed by its share of diverse rows; with
    R = n_diverse / n_downstream the shares are floor((i+1)R) - floor(iR), so exactly R each for whole R and
    spread as evenly as possible otherwise (2.5 -> 2, 3, 2, 3, ...).
    """
    if schedule == "shuffle":
        items = [(True, i) for i in range(n_downstream)] + [(False, j) for j in range(n_diverse)]
        rng.shuffle(items)
        return items
    if schedule != "interleave":
        raise ValueError(f"unknown schedule {schedule!r}; use shuffle or interleave")
    if n_downstream == 0:
        return [(False, j) for j in range(n_diverse)]
    down = rng.sample(range(n_downstream), n_downstream)
    items, j = [], 0
    for k, i in enumerate(down):
        items.append((True, i))
        share = (k + 1) * n_diverse // n_downstream - k * n_diverse // n_downstream
        items += [(False, j + t) for t in range(share)]
        j += share
    return items

import random
from collections import Counter

import pytest

from delia.mixing.schedule import diverse_count, order, select


@pytest.mark.parametrize("ratio,n,expected", [(520, 100, (52000, True)), (0.29, 100, (29, True)),
                                              (2.5, 3, (7, False)), (0, 100, (0, True)), (1.1, 10, (11, True))])
def test_diverse_count_is_exact_floor(ratio, n, expected):
    assert diverse_count(ratio, n) == expected


def test_select_without_repeat_is_a_sample():
    picks = select(100, 40, random.Random(1))
    assert len({i for i, _ in picks}) == 40 and all(r == 0 for _, r in picks)


def test_select_with_repeat_uses_every_row_per_pass():
    picks = select(10, 25, random.Random(1))
    c = Counter(i for i, _ in picks)
    assert sorted(c.values()) == [2] * 5 + [3] * 5
    assert Counter(r for _, r in picks) == {0: 10, 1: 10, 2: 5}


def test_shuffle_order_is_a_permutation():
    items = order(7, 21, "shuffle", random.Random(0))
    assert sorted(i for d, i in items if d) == list(range(7))
    assert sorted(i for d, i in items if not d) == list(range(21))
    assert items != order(7, 21, "shuffle", random.Random(1))


def test_interleave_fractional_shares():
    items = order(4, 10, "interleave", random.Random(0))  # R = 2.5
    shares, run = [], 0
    for is_down, _ in items[1:] + [(True, -1)]:
        if is_down:
            shares.append(run)
            run = 0
        else:
            run += 1
    assert items[0][0] and shares == [2, 3, 2, 3]
    assert [i for d, i in items if not d] == list(range(10))

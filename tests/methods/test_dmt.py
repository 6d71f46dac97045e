"""DMT stage 2 (baselines.md §5): r x |D| diverse rows plus max(1, round(k |D|)) task rows, order kept."""

from __future__ import annotations

import json

import pytest

from delia.methods.dmt import dmt_stage2, stage2_rows


def build_rows(n_task: int, ratio: int) -> list[dict]:
    rows = [{"id": f"t{i}", "source": "downstream"} for i in range(n_task)]
    rows += [{"id": f"d{i}", "source": "diverse"} for i in range(n_task * ratio)]
    # interleave deterministically so "order kept" is checkable
    return sorted(rows, key=lambda r: (int(r["id"][1:]) * (ratio + 1) + (0 if r["id"][0] == "t" else 1)))


@pytest.mark.parametrize("n,ratio,k,want", [(30, 2, 1 / 256, 1), (100, 1, 1 / 64, 2), (100, 1, 1 / 16, 6),
                                            (65, 3, 1 / 16, 4)])
def test_stage2_counts(n, ratio, k, want):
    rows = build_rows(n, ratio)
    kept = stage2_rows(rows, k, seed=42)
    assert sum(r["source"] == "diverse" for r in kept) == n * ratio
    assert sum(r["source"] == "downstream" for r in kept) == want == max(1, round(k * n))
    order = {r["id"]: i for i, r in enumerate(rows)}
    assert [order[r["id"]] for r in kept] == sorted(order[r["id"]] for r in kept)


def test_stage2_choice_is_seeded(tmp_path):
    rows = build_rows(100, 1)
    assert stage2_rows(rows, 1 / 16, 42) == stage2_rows(rows, 1 / 16, 42)
    assert stage2_rows(rows, 1 / 16, 42) != stage2_rows(rows, 1 / 16, 7)
    (tmp_path / "b").mkdir()
    (tmp_path / "b/train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "b/manifest.json").write_text('{"special_tokens": ["<sep>"]}')
    counts = dmt_stage2({"data": tmp_path / "b"}, tmp_path / "o", k=1 / 16, seed=42)
    assert counts == {"diverse": 100, "downstream": 6, "total": 106, "k": 1 / 16}
    assert len((tmp_path / "o/train.jsonl").read_text().splitlines()) == 106

"""Fixtures: an experiment config on the shared data (paths absolute, output in tmp_path)."""

from __future__ import annotations

import pytest

from delia.config import from_dict
from delia.experiments import ExperimentConfig


@pytest.fixture
def make_exp(tmp_path, shared_data):
    def make(names: list[str], ratios: list[float] = (2.0,), seeds: list[int] = (42,), sizes: list[int] = (30,),
             **over) -> ExperimentConfig:
        base = {"name": "t", "out": str(tmp_path / "exp"),
                "data": {"train": str(shared_data / "halu/train.jsonl"), "test": str(shared_data / "halu/test.jsonl"),
                         "valid": None, "queries": str(shared_data / "diverse/alpaca_5000.jsonl")},
                "grid": {"methods": list(names), "sizes": list(sizes), "ratios": list(ratios),
                         "seeds": list(seeds)},
                "eval": {"halu": {"seen_file": str(shared_data / "halu/train.jsonl"),
                                  "unseen_file": str(shared_data / "halu/instructions_unseen.txt")}}, **over}
        return from_dict(ExperimentConfig, base)

    return make

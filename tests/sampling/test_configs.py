"""Shipped sampling configs validate."""

from __future__ import annotations

from pathlib import Path

import pytest

from delia.config import load_config
from delia.sampling.run import SampleConfig

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("sample_*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_config_validates(path):
    cfg = load_config(SampleConfig, path, ["out=x.jsonl"])
    assert cfg.temperature == 0.7 and cfg.top_p == 0.95 and cfg.max_new_tokens == 512


def test_there_is_a_config():
    assert CONFIGS

"""Shared fixtures: tiny tied/untied models saved as HF directories, shared data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not DATA.exists():
        pytest.skip(f"{DATA} not found (../shared beside the checkout)")
    return DATA


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> str:
    """A tiny tied Llama (2 layers, hidden 64) with the SmolLM2 tokenizer, as an HF directory."""
    from delia.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-tied"), tied=True)


@pytest.fixture(scope="session")
def tiny_untied_dir(tmp_path_factory) -> str:
    """The same tiny Llama with untied input/output embeddings."""
    from delia.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-untied"), tied=False)

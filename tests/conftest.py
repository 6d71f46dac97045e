"""Shared fixtures: tiny tied/untied models saved as HF directories, the packaged data as plain files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))



@pytest.fixture(scope="session")
def shared_data(tmp_path_factory) -> Path:
    """The data delia ships (`builtin:` names) laid out as plain files, `halu/train.jsonl` etc. The tests need
    no `../shared`: everything they read is packaged."""
    from delia.data.sources import builtin_names, resolve_source

    root = tmp_path_factory.mktemp("data")
    for name in builtin_names():
        src = resolve_source(f"builtin:{name}")
        dst = root / name.split("/")[0] / src.name
        dst.parent.mkdir(exist_ok=True)
        dst.write_bytes(src.read_bytes())
    return root


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


@pytest.fixture(scope="session")
def tiny_chatty_dir(tmp_path_factory) -> str:
    """The tiny tied Llama with larger initial weights (std 0.2): its greedy replies vary with the prompt (the
    std-0.02 one answers newlines to everything), so comparing outputs of two runs tells them apart."""
    from delia.testing import tiny_model_dir

    return tiny_model_dir(tmp_path_factory.mktemp("tiny-chatty"), tied=True, initializer_range=0.2)

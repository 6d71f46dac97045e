"""Tiny models for tests and examples: a 2-layer Llama (hidden 64) with the real SmolLM2 tokenizer.

`tiny_model_dir(path, tied=...)` saves one as a normal HF directory, so every code path that takes a
model name or path can be exercised without a network, a GPU or the 135M model.
"""

from __future__ import annotations

from pathlib import Path

import torch

from delia.models import DEFAULT_MODEL, load_tokenizer


def tiny_config(vocab_size: int, tied: bool = True, **overrides):
    """LlamaConfig with 2 layers, hidden 64, 4 heads (2 KV heads), intermediate 128."""
    from transformers import LlamaConfig

    tok = load_tokenizer(DEFAULT_MODEL)
    kw = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
              tie_word_embeddings=tied, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
              pad_token_id=tok.pad_token_id, initializer_range=0.02)
    kw.update(overrides)
    return LlamaConfig(**kw)


def tiny_model(tied: bool = True, seed: int = 0, **overrides):
    """(model, tokenizer): a randomly initialised tiny Llama with the SmolLM2 tokenizer, fp32, eval mode."""
    from transformers import LlamaForCausalLM

    tok = load_tokenizer(DEFAULT_MODEL)
    torch.manual_seed(seed)
    vocab = overrides.pop("vocab_size", len(tok))
    model = LlamaForCausalLM(tiny_config(vocab, tied=tied, **overrides)).eval()
    return model, tok


def tiny_model_dir(path: str | Path, tied: bool = True, seed: int = 0, **overrides) -> str:
    """Save a tiny model and the tokenizer to `path` (once) and return the path."""
    path = Path(path)
    if not (path / "config.json").exists():
        model, tok = tiny_model(tied=tied, seed=seed, **overrides)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return str(path)

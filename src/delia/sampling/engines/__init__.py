"""Sampling engines behind one interface (see `base`): transformers (default), vllm, openai."""

from delia.sampling.engines import hf, openai_api, vllm_engine  # noqa: F401  (each registers itself)
from delia.sampling.engines.base import ENGINES, Engine, EngineError, RowsFailed, make_engine

__all__ = ["ENGINES", "Engine", "EngineError", "RowsFailed", "make_engine"]

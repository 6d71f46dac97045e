"""Self-sampling: the base model answers a diverse query set (DELIA's "extensive diverse data").

Engines (transformers, vllm, openai) share one interface (`make_engine`); `run_sample` writes a resumable,
content-addressed cache of chat rows; `self_queries` makes the model write its own queries (Magpie).
Heavy modules (torch, httpx) are imported only when an engine is built.
"""

from delia.sampling.cache import CacheError, SampleCache, cache_key
from delia.sampling.engines.base import ENGINES, EngineError, RowsFailed, make_engine
from delia.sampling.prompts import Query, query_of, sample_prompt, sample_row
from delia.sampling.run import SampleConfig, SampleSummary, load_queries, run_sample
from delia.sampling.self_queries import SelfQueryConfig, SelfQueryError, self_queries

__all__ = ["ENGINES", "CacheError", "EngineError", "Query", "RowsFailed", "SampleCache", "SampleConfig",
           "SampleSummary", "SelfQueryConfig", "SelfQueryError", "cache_key", "load_queries", "make_engine",
           "query_of", "run_sample", "sample_prompt", "sample_row", "self_queries"]

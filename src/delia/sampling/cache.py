"""The sample cache: `delia.gencache.GenerationCache` (locked, fsynced, torn lines repaired) keyed by `cache_key`."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from delia.gencache import CacheError, GenerationCache

__all__ = ["CacheError", "SampleCache", "cache_key"]


def cache_key(query: str, reference: str | None, model: str, params: dict[str, Any], seed: int) -> str:
    """sha256 hex of (query, reference, model identity, sampling params, seed): the row's identity."""
    blob = json.dumps({"query": query, "reference": reference, "model": model, "params": params, "seed": seed},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SampleCache(GenerationCache):
    """The `delia sample` cache file: chat rows with a `key`; a bad row in the middle is an error (DataError).

    Args:
        path: the cache file (created with its parent directory when missing).
    """

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, busy="another `delia sample` is writing this cache; wait for it or use another --out")

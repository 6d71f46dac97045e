"""Manifest helpers: file hashes and deterministic JSON."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes (`builtin:` and hub names are resolved first)."""
    from delia.data.sources import resolve_source

    h = hashlib.sha256()
    with open(resolve_source(path), "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_json(path: str | Path, data: Any) -> None:
    """Atomic, deterministic JSON (fixed indentation, insertion order, trailing newline, no timestamps)."""
    from delia.files import write_json_atomic

    write_json_atomic(path, data, indent=2)

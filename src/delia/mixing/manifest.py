"""Manifest helpers: file hashes and deterministic JSON."""

from __future__ import annotations

import hashlib
import json
import os
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
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)

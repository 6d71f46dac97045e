"""Stream the diverse-data cache: validate every row, hash the file, and remember only byte offsets of usable
rows, so a 60k-row cache costs a few MB however long its responses are."""

from __future__ import annotations

import hashlib
import json
from array import array
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delia.data import DataError, FieldError, Problem
from delia.data.formats import FORMATS
from delia.data.io import parse_row
from delia.data.jsonl import decode_line, parse_json


@dataclass
class CacheScan:
    """What one pass over the cache found.

    Attributes:
        offsets: byte offset of each usable row, in file order.
        excluded: one dict per excluded row: file, line, id, reason.
        models: rows per `meta.model` (to spot a cache that mixes models).
        truncated: usable rows whose `meta.finish_reason` is 'length'.
        with_token: usable rows whose text contains the special token (diverse data normally should not).
        budgets: rows per sampling budget (`meta.params.max_new_tokens`; '?' when a row does not say).
    """

    path: str
    sha256: str
    rows: int = 0
    offsets: array = field(default_factory=lambda: array("q"))
    excluded: list[dict[str, Any]] = field(default_factory=list)
    models: Counter = field(default_factory=Counter)
    truncated: int = 0
    with_token: int = 0
    budgets: Counter = field(default_factory=Counter)

    @property
    def usable(self) -> int:
        return len(self.offsets)


def exclusion_reason(response: str, meta: dict[str, Any], exclude_truncated: bool) -> str | None:
    """Why the builder leaves a cache row out (None: usable). One rule, shared with the experiment's slice step.

    Args:
        response: the assistant reply.
        meta: the row's `meta` ({} when absent).
        exclude_truncated: whether an answer cut at the sampling budget (finish_reason 'length') is excluded.
    """
    if not response.strip():
        return "empty response"
    if exclude_truncated and meta.get("finish_reason") == "length":
        return "truncated (finish_reason=length)"
    return None


def sampling_budget(meta: dict[str, Any]) -> str:
    """The row's sampling budget (`meta.params.max_new_tokens`) as a manifest key; '?' when unrecorded."""
    params = meta.get("params") if isinstance(meta.get("params"), dict) else {}
    budget = params.get("max_new_tokens")
    return str(budget) if isinstance(budget, int) and not isinstance(budget, bool) else "?"


def scan_cache(path: str | Path, token: str = "", exclude_truncated: bool = False) -> CacheScan:
    """Validate and index the cache (interface 1: chat rows with id, key, messages, meta).

    Args:
        path: the cache JSONL.
        token: special token to count in diverse rows ('' skips).
        exclude_truncated: also exclude rows whose generation hit the length limit.
    Returns:
        A CacheScan. Rows with an empty response are excluded (and listed), never silently dropped.
    Raises:
        DataError: every malformed row or duplicate id, as FILE:LINE: field: reason; or an empty file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: diverse cache not found")
    if path.is_dir():
        raise DataError([Problem(str(path), 0, "is a directory, not a diverse cache file")])
    fmt = FORMATS.get("messages")
    scan = CacheScan(str(path), "")
    digest = hashlib.sha256()
    problems: list[Problem] = []
    first_line: dict[str, int] = {}
    offset = 0
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            digest.update(raw)
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            scan.rows += 1
            text, reason = decode_line(raw[:-1] if raw.endswith(b"\n") else raw)
            obj, field, reason = parse_json(text) if text is not None else (None, None, reason)
            if reason:
                problems.append(Problem(str(path), lineno, reason, field))
                continue
            try:
                rec = parse_row(obj, fmt, str(path), lineno)
            except FieldError as e:
                problems.append(Problem(str(path), lineno, e.reason, e.field))
                continue
            if "id" not in obj:
                problems.append(Problem(str(path), lineno, "cache rows need an id", "id"))
                continue
            if rec.id in first_line:
                problems.append(Problem(str(path), lineno, f"duplicate id {rec.id!r} (first on line "
                                                           f"{first_line[rec.id]})", "id"))
                continue
            first_line[rec.id] = lineno
            if rec.messages[-1]["role"] != "assistant":
                problems.append(Problem(str(path), lineno, "last turn must be the assistant response", "messages"))
                continue
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else {}
            scan.budgets[sampling_budget(meta)] += 1
            reason = exclusion_reason(rec.response, meta, exclude_truncated)
            if reason:
                scan.excluded.append({"file": str(path), "line": lineno, "id": rec.id, "reason": reason})
                continue
            scan.offsets.append(start)
            scan.models[str(meta.get("model", "?"))] += 1
            scan.truncated += meta.get("finish_reason") == "length"
            scan.with_token += bool(token) and any(token in m["content"] for m in rec.messages)
    if problems:
        raise DataError(problems)
    if scan.rows == 0:
        raise DataError([Problem(str(path), 1, "diverse cache holds no rows")])
    scan.sha256 = digest.hexdigest()
    return scan


def read_row(f, offset: int) -> dict[str, Any]:
    """The training row (id, messages with role/content only) stored at `offset` of an open binary file."""
    f.seek(offset)
    obj = json.loads(f.readline())
    return {"id": str(obj["id"]), "messages": [{"role": m["role"], "content": m["content"]} for m in obj["messages"]]}

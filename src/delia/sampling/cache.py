"""The resumable, content-addressed sample cache: an append-only JSONL file of chat rows keyed by hash.

Why it cannot lose or corrupt work: rows are appended with one `write` per batch followed by `fsync`, so a
kill loses at most the batch in flight. A kill during the write can leave a torn last line; `open` finds
it (the file does not end in a newline), cuts it off and logs what was cut. A failed write (full disk)
is rolled back to the last complete batch before the error is raised. An exclusive lock keeps two runs
from appending to the same file at once. (The file mechanics are `delia.data.jsonl.AppendLog`.)
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from delia.data.jsonl import AppendLog
from delia.data.records import DataError, Problem
from delia.errors import UserError

log = logging.getLogger(__name__)


class CacheError(UserError, RuntimeError):
    """The cache cannot be opened or written (locked by another run, disk full); the message says what to do."""


def cache_key(query: str, reference: str | None, model: str, params: dict[str, Any], seed: int) -> str:
    """sha256 hex of (query, reference, model identity, sampling params, seed): the row's identity."""
    blob = json.dumps({"query": query, "reference": reference, "model": model, "params": params, "seed": seed},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SampleCache:
    """Append-only JSONL rows with a `key`; use as a context manager (`open` on enter, `close` on exit).

    The file handling (lock, torn-line repair, fsynced appends rolled back on failure) is
    `delia.data.jsonl.AppendLog`, shared with the evaluation's generation cache.

    Args:
        path: the cache file (created with its parent directory when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[str] = set()
        self.rows = 0
        self._log = AppendLog(self.path, complete=lambda row: isinstance(row, dict) and isinstance(row.get("key"), str),
                              busy="another `delia sample` is writing this cache; wait for it or use another --out")

    def __enter__(self) -> SampleCache:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> set[str]:
        """Lock the file, repair a torn last line, and load the keys already done.

        Returns:
            The set of keys present.
        Raises:
            CacheError: another process holds the lock.
            DataError: a complete line in the middle of the file is not a valid row (not ours to fix).
        """
        try:
            self._log.open()
        except BlockingIOError as e:
            raise CacheError(e.strerror) from None
        try:
            self._load()
        except BaseException:
            self.close()
            raise
        return self.keys

    def _load(self) -> None:
        problems = []
        for lineno, row, reason in self._log.rows():
            if reason:
                problems.append(Problem(str(self.path), lineno, reason))
            elif not isinstance(row, dict) or not isinstance(row.get("key"), str):
                problems.append(Problem(str(self.path), lineno, "row has no string key", "key"))
            else:
                self.keys.add(row["key"])
                self.rows += 1
        if problems:
            raise DataError(problems)
        if self.rows != len(self.keys):
            log.warning("%s: %d rows hold %d distinct keys", self.path, self.rows, len(self.keys))

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows as one write and fsync them; on failure the file is rolled back to before the call.

        Raises:
            CacheError: the write failed (e.g. disk full); the cache still holds every earlier row.
        """
        try:
            self._log.append(rows)
        except OSError as e:
            hint = "the disk is full; free space and " if e.errno == errno.ENOSPC else ""
            raise CacheError(f"{self.path}: cannot write to the sample cache ({e.strerror or e}); it still holds "
                             f"the {self.rows} rows written before: {hint}rerun the same command to resume") from None
        except RuntimeError as e:
            raise CacheError(str(e)) from None
        self.keys.update(r["key"] for r in rows)
        self.rows += len(rows)

    def close(self) -> None:
        self._log.close()

"""The resumable, content-addressed sample cache: an append-only JSONL file of chat rows keyed by hash.

Why it cannot lose or corrupt work: rows are appended with one `write` per batch followed by `fsync`, so a
kill loses at most the batch in flight. A kill during the write can leave a torn last line; `open` finds
it (the file does not end in a newline), cuts it off and logs what was cut. A failed write (full disk)
is rolled back to the last complete batch before the error is raised. An exclusive lock keeps two runs
from appending to the same file at once.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from delia.data.records import DataError, Problem

log = logging.getLogger(__name__)


class CacheError(RuntimeError):
    """The cache cannot be opened or written (locked by another run, disk full); the message says what to do."""


def cache_key(query: str, reference: str | None, model: str, params: dict[str, Any], seed: int) -> str:
    """sha256 hex of (query, reference, model identity, sampling params, seed): the row's identity."""
    blob = json.dumps({"query": query, "reference": reference, "model": model, "params": params, "seed": seed},
                      sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class SampleCache:
    """Append-only JSONL rows with a `key`; use as a context manager (`open` on enter, `close` on exit).

    Args:
        path: the cache file (created with its parent directory when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: set[str] = set()
        self.rows = 0
        self._fd: int | None = None

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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise CacheError(f"{self.path}: another `delia sample` is writing this cache; wait for it or "
                             f"use another --out") from None
        self._repair()
        self._load()
        return self.keys

    def _repair(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        tail = data[start:]
        try:
            row = json.loads(tail)
            complete = isinstance(row, dict) and isinstance(row.get("key"), str)
        except ValueError:
            complete = False
        if complete:  # the kill fell between the row and its newline: keep the row
            os.write(self._fd, b"\n")
            log.warning("%s: last row had no newline; added one (row kept)", self.path)
        else:
            os.ftruncate(self._fd, start)
            shown = tail[:80].decode("utf-8", "replace")
            log.warning("%s: cut a torn last line (%d bytes, from an interrupted write): %r%s", self.path,
                        len(tail), shown, "..." if len(tail) > 80 else "")
        os.fsync(self._fd)

    def _load(self) -> None:
        problems = []
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as e:
                    problems.append(Problem(str(self.path), lineno, f"invalid JSON: {e}"))
                    continue
                if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                    problems.append(Problem(str(self.path), lineno, "row has no string key", "key"))
                    continue
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
        if not rows:
            return
        if self._fd is None:
            raise CacheError(f"{self.path}: cache is not open")
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError as e:
            try:
                os.ftruncate(self._fd, before)
                os.fsync(self._fd)
            except OSError:
                pass  # the torn tail is cut on the next open
            hint = "the disk is full; free space and " if e.errno == errno.ENOSPC else ""
            raise CacheError(f"{self.path}: cannot write to the sample cache ({e.strerror or e}); it still holds "
                             f"the {self.rows} rows written before: {hint}rerun the same command to resume") from None
        self.keys.update(r["key"] for r in rows)
        self.rows += len(rows)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

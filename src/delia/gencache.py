"""The one resumable generation cache (sample and eval): an append-only JSONL file of rows keyed by content hash.

Why it cannot lose or corrupt work: rows are appended with one `write` per batch followed by `fsync`, so a
kill loses at most the batch in flight. A kill during the write can leave a torn last line; `open` finds
it (the file does not end in a newline), cuts it off and logs what was cut. A failed write (full disk)
is rolled back to the last complete batch before the error is raised. An exclusive lock keeps two runs
from appending to the same file at once. (The file mechanics are `delia.data.jsonl.AppendLog`.)

The key is the caller's: `delia sample` hashes (query, reference, model, params, seed) (`sampling.cache_key`),
`delia eval` hashes its generation identity + the rendered prompt (`evaluation.run.generate_rows`).
"""

from __future__ import annotations

import errno
import logging
from pathlib import Path
from typing import Any, Literal

from delia.data.jsonl import AppendLog
from delia.data.records import DataError, Problem
from delia.errors import UserError

log = logging.getLogger(__name__)


class CacheError(UserError, RuntimeError):
    """The cache cannot be opened or written (locked by another run, disk full); the message says what to do."""


class GenerationCache:
    """Append-only JSONL rows with a string `key`; use as a context manager (`open` on enter, `close` on exit).

    Args:
        path: the cache file (created with its parent directory when missing).
        busy: the message when another process holds the lock.
        required: fields (besides `key`) a row must have; a last line without its newline that lacks them
            is a torn write and is cut.
        bad_rows: a complete line in the middle that is not a valid row: "error" raises DataError (not ours
            to fix), "skip" logs FILE:LINE and ignores it (its prompt is generated again).
        keep_rows: keep every row in memory (`rows_by_key`; the last row of a repeated key wins), not just keys.
    """

    def __init__(self, path: str | Path, busy: str = "another delia process is writing this cache",
                 required: tuple[str, ...] = (), bad_rows: Literal["error", "skip"] = "error",
                 keep_rows: bool = False) -> None:
        self.path = Path(path)
        self.keys: set[str] = set()
        self.rows = 0
        self.rows_by_key: dict[str, dict[str, Any]] = {}
        self.required, self.bad_rows, self.keep_rows = required, bad_rows, keep_rows
        self._log = AppendLog(self.path, complete=self._is_row, busy=busy)

    def _is_row(self, row: Any) -> bool:
        return isinstance(row, dict) and isinstance(row.get("key"), str) and all(f in row for f in self.required)

    def __enter__(self) -> GenerationCache:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> set[str]:
        """Lock the file, repair a torn last line, and load the keys (and rows) already done.

        Returns:
            The set of keys present.
        Raises:
            CacheError: another process holds the lock.
            DataError: (bad_rows "error") a complete line in the middle of the file is not a valid row.
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
            field = None
            if not reason and not self._is_row(row):
                missing = [f for f in self.required if not isinstance(row, dict) or f not in row]
                if not isinstance(row, dict) or not isinstance(row.get("key"), str):
                    field, reason = "key", "row has no string key"
                else:
                    reason = f"row lacks {', '.join(missing)}"
            if reason:
                problems.append(Problem(str(self.path), lineno, reason, field))
                continue
            self.keys.add(row["key"])
            self.rows += 1
            if self.keep_rows:
                self.rows_by_key[row["key"]] = row
        if problems and self.bad_rows == "error":
            raise DataError(problems)
        for p in problems:
            log.warning("%s; its prompt is generated again", p)
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
            raise CacheError(f"{self.path}: cannot write to the cache ({e.strerror or e}); it still holds "
                             f"the {self.rows} rows written before: {hint}rerun the same command to resume") from None
        except RuntimeError as e:
            raise CacheError(str(e)) from None
        self.keys.update(r["key"] for r in rows)
        self.rows += len(rows)
        if self.keep_rows:
            self.rows_by_key.update((r["key"], r) for r in rows)

    def close(self) -> None:
        self._log.close()

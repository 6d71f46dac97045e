"""The JSON-lines codec every delia reader and writer shares, and the append-only log behind resumable caches.

Writing: `dumps_line` is `json.dumps(ensure_ascii=False)` with U+2028, U+2029 and U+0085 escaped. They are
legal inside JSON strings, but `str.splitlines` and many editors treat them as line breaks, so a file
written raw could be read back as broken rows. Reading: lines end at b"\\n" only (a trailing b"\\r" is
dropped), each line is decoded as strict UTF-8 and parsed on its own, and every failure becomes a reason
naming the column or field (invalid UTF-8, invalid JSON, nesting too deep, a lone surrogate, a repeated
key) instead of an exception, so callers can report FILE:LINE: field: reason.

`AppendLog` is an append-only JSONL file: one locked writer at a time, a torn last line (a kill during a
write) cut on open, each append written in one go and fsynced, and rolled back when the write fails.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from delia.files import dumps_line  # noqa: F401  (re-exported: the writer lives with the atomic writes)

log = logging.getLogger(__name__)

MAX_DEPTH = 64  # no input format nests deeper than a few levels; deeper rows are rejected, not recursed into


def reject_repeated_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`object_pairs_hook` that raises RepeatedKey instead of keeping the last of two equal keys."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise RepeatedKey(k)
        out[k] = v
    return out


class RepeatedKey(ValueError):
    """A JSON object gave one key twice (`json` would silently keep the last value)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"key {key!r} given twice in one object")
        self.key = key


def check_value(obj: Any, where: str = "", depth: int = 0) -> tuple[str | None, str] | None:
    """(field, reason) for the first string holding a lone surrogate or a value nested too deep, else None."""
    if depth > MAX_DEPTH:
        return where or None, f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(obj, str):
        try:
            obj.encode("utf-8")  # fails exactly on surrogates, at C speed
        except UnicodeEncodeError as e:
            return where or None, f"lone surrogate U+{ord(obj[e.start]):04X} (not valid Unicode text)"
        return None
    if isinstance(obj, dict):
        for k, v in obj.items():
            found = check_value(k, where, depth + 1) or check_value(v, f"{where}.{k}" if where else k, depth + 1)
            if found:
                return found
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            found = check_value(v, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def parse_json(text: str, line: int = 1) -> tuple[Any, str | None, str | None]:
    """(object, field, reason): reason is None when `text` is valid JSON holding valid Unicode text."""
    try:
        obj = json.loads(text, object_pairs_hook=reject_repeated_keys)
    except RepeatedKey as e:
        return None, e.key, "key given twice in one object"
    except json.JSONDecodeError as e:
        col = e.colno if e.lineno == 1 else f"{e.colno} of line {line + e.lineno - 1}"
        return None, None, f"invalid JSON: {e.msg} (column {col})"
    except RecursionError:
        return None, None, "invalid JSON: nested too deeply to parse"
    found = check_value(obj)
    if found:
        return None, found[0], found[1]
    return obj, None, None


def decode_line(raw: bytes) -> tuple[str | None, str | None]:
    """(text, reason): strict UTF-8 decoding of one line."""
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"not UTF-8 text: byte 0x{raw[e.start]:02x} at column {e.start + 1} ({e.reason})"


def split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based line number, line) of `data` split at b"\\n" only, without the newline or a trailing b"\\r"."""
    for lineno, raw in enumerate(data.split(b"\n"), 1):
        yield lineno, raw[:-1] if raw.endswith(b"\r") else raw


def read_text_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file split at "\\n" only (never at U+2028 or other Unicode breaks).

    Raises:
        DataError: the file is a directory or not UTF-8 (FILE:LINE: reason).
    """
    from delia.data.records import DataError, Problem

    if Path(path).is_dir():
        raise DataError([Problem(str(path), 0, "is a directory, not a text file")])
    data = Path(path).read_bytes()
    out = []
    for lineno, raw in split_lines(data.removeprefix(b"\xef\xbb\xbf")):
        text, reason = decode_line(raw)
        if reason:
            raise DataError([Problem(str(path), lineno, reason)])
        out.append(text)
    if out and out[-1] == "":
        out.pop()
    return out


class AppendLog:
    """An append-only JSONL file of dict rows, with one locked writer at a time.

    Args:
        path: the file (created with its parent directory when missing).
        complete: whether a parsed last line without its newline is a whole row (then kept, else cut).
        busy: the message of the error raised when another process holds the lock.
    """

    def __init__(self, path: str | Path, complete: Callable[[Any], bool] = lambda row: isinstance(row, dict),
                 busy: str = "another delia process is writing this file") -> None:
        self.path = Path(path)
        self.complete, self.busy = complete, busy
        self._fd: int | None = None

    def open(self) -> None:
        """Lock the file and repair a torn last line.

        Raises:
            BlockingIOError: another process holds the lock (message: `busy`).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise BlockingIOError(errno.EWOULDBLOCK, f"{self.path}: {self.busy}") from None
        self._repair()

    def _repair(self) -> None:
        if os.fstat(self._fd).st_size == 0:
            return
        data = self.path.read_bytes()
        if data.endswith(b"\n"):
            return
        start = data.rfind(b"\n") + 1
        tail = data[start:]
        text, _ = decode_line(tail)
        row = parse_json(text)[0] if text is not None else None
        if row is not None and self.complete(row):  # the kill fell between the row and its newline
            os.write(self._fd, b"\n")
            log.warning("%s: last row had no newline; added one (row kept)", self.path)
        else:
            os.ftruncate(self._fd, start)
            shown = tail[:80].decode("utf-8", "replace")
            log.warning("%s: cut a torn last line (%d bytes, from an interrupted write): %r%s", self.path,
                        len(tail), shown, "..." if len(tail) > 80 else "")
        os.fsync(self._fd)

    def rows(self) -> Iterator[tuple[int, Any, str | None]]:
        """(line, parsed row or None, reason) for every non-blank line."""
        for lineno, raw in split_lines(self.path.read_bytes()):
            if not raw.strip():
                continue
            text, reason = decode_line(raw)
            obj, field, reason = parse_json(text, lineno) if text is not None else (None, None, reason)
            yield lineno, obj, (f"{field}: {reason}" if field else reason)

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows in one write and fsync them; on failure the file is rolled back to before the call.

        Raises:
            OSError: the write failed (e.g. disk full); the file still holds every earlier row.
        """
        if not rows:
            return
        if self._fd is None:
            raise RuntimeError(f"{self.path}: not open")
        data = "".join(dumps_line(r) + "\n" for r in rows).encode("utf-8")
        before = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:  # os.write may write less than asked
                view = view[os.write(self._fd, view):]
            os.fsync(self._fd)
        except OSError:
            try:
                os.ftruncate(self._fd, before)
                os.fsync(self._fd)
            except OSError:
                pass  # the torn tail is cut on the next open
            raise

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the lock
            self._fd = None

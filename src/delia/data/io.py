"""Read and write example files (JSONL, or a JSON array for Alpaca-style files) with file/line provenance.

Loading never silently drops a row: any invalid row raises `DataError` listing every problem as
`FILE:LINE: field: reason`, unless `skip_invalid=True`, which logs how many and which were skipped and
appends them to the `skipped` list the caller passes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from delia.data.formats import FORMATS, Format, detect_format
from delia.data.jsonl import (RepeatedKey, check_value, decode_line, dumps_line, parse_json, read_text_lines,
                              reject_repeated_keys, split_lines)
from delia.data.records import DataError, FieldError, Problem, Record
from delia.data.sources import resolve_source
from delia.files import atomic_write

log = logging.getLogger(__name__)

ID_KEYS = ("id",)


def iter_json_rows(path: str | Path) -> Iterator[tuple[int, Any, str | None]]:
    """Yield (line, parsed object or None, error) for each row of a JSONL file or JSON array file.

    Lines end at "\\n" only (see `delia.data.jsonl`); blank lines hold no row and are passed over. A JSON
    array reports each element at the line where it starts. A file that is not UTF-8, a lone surrogate,
    a repeated key or nesting too deep is reported per row, never raised.

    Raises:
        FileNotFoundError: `path` does not exist.
        DataError: `path` is a directory or cannot be read.
    """
    path = resolve_source(path)  # builtin:/hub names become a local file; a missing one raises FileNotFoundError
    if path.is_dir():
        raise DataError([Problem(str(path), 0, "is a directory, not a file of examples")])
    try:
        data = path.read_bytes().removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not content
    except OSError as e:
        raise DataError([Problem(str(path), 0, f"cannot read: {e.strerror or e}")]) from None
    stripped = data.lstrip()
    if path.suffix == ".json" or (stripped.startswith(b"[") and path.suffix != ".jsonl"):
        yield from _iter_json_array(data)
        return
    for lineno, raw in split_lines(data):
        if not raw.strip():
            continue
        text, reason = decode_line(raw)
        if reason:
            yield lineno, None, reason
            continue
        obj, field, reason = parse_json(text)
        yield lineno, obj, (f"{field}: {reason}" if field else reason)


def _iter_json_array(data: bytes) -> Iterator[tuple[int, Any, str | None]]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        yield data.count(b"\n", 0, e.start) + 1, None, f"not UTF-8 text: byte 0x{data[e.start]:02x} ({e.reason})"
        return
    dec = json.JSONDecoder(object_pairs_hook=reject_repeated_keys)
    pos = len(text) - len(text.lstrip())
    if not text[pos:].startswith("["):
        yield text.count("\n", 0, pos) + 1, None, "expected a JSON array of objects"
        return
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return
        line = text.count("\n", 0, pos) + 1
        try:
            obj, pos = dec.raw_decode(text, pos)
        except RepeatedKey as e:
            yield line, None, f"{e.key}: key given twice in one object"
            return  # cannot resynchronise inside an array
        except json.JSONDecodeError as e:
            yield e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})"
            return
        except RecursionError:
            yield line, None, "invalid JSON: nested too deeply to parse"
            return
        found = check_value(obj)
        yield (line, None, f"{found[0]}: {found[1]}" if found[0] else found[1]) if found else (line, obj, None)


def parse_row(obj: Any, fmt: Format, source: str, line: int) -> Record:
    """Normalise one parsed JSON object; raises FieldError on invalid content."""
    if not isinstance(obj, dict):
        kind = "null" if obj is None else type(obj).__name__
        raise FieldError(None, f"expected a JSON object, got {kind}")
    for key in fmt.required:
        if key not in obj:
            raise FieldError(key, "missing")
    messages, fields = fmt.parse(obj)
    extra = {k: v for k, v in obj.items() if k not in fmt.keys}
    rid = obj.get("id")
    if rid is not None and not isinstance(rid, (str, int)):
        raise FieldError("id", "expected a string or integer")
    rid = str(rid) if rid is not None else f"{Path(source).stem}:{line}"
    return Record(id=rid, messages=messages, fields=fields, fmt=fmt.name, source=source, line=line, extra=extra)


def _read(path: str | Path, fmt: str) -> tuple[list[Record], list[Problem]]:
    source = str(path)
    records, problems = [], []
    chosen: Format | None = FORMATS.get(fmt) if fmt != "auto" else None
    seen_ids: dict[str, int] = {}
    first_line = 0
    for line, obj, err in iter_json_rows(path):
        if err:
            problems.append(Problem(source, line, err))
            continue
        if chosen is None:
            chosen = detect_format(obj) if isinstance(obj, dict) else None
            if chosen is None:
                keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
                known = "; ".join(f"{n} ({', '.join(FORMATS.get(n).required)})" for n in FORMATS)
                problems.append(Problem(source, line, f"cannot tell the format from keys {keys}; "
                                                      f"expected one of: {known}"))
                continue
        first_line = first_line or line
        try:
            rec = parse_row(obj, chosen, source, line)
        except FieldError as e:
            reason = e.reason
            other = detect_format(obj) if isinstance(obj, dict) else None
            if e.reason == "missing" and other is not None and other is not chosen:
                how = f"detected from line {first_line}" if fmt == "auto" else "as asked"
                reason = (f"missing: this row has the keys of the {other.name} format, but the file is read as "
                          f"{chosen.name} ({how}); one file holds one format")
            problems.append(Problem(source, line, reason, e.field))
            continue
        if "id" in obj:
            if rec.id in seen_ids:
                problems.append(Problem(source, line, f"duplicate id {rec.id!r} (first on line "
                                                      f"{seen_ids[rec.id]})", "id"))
                continue
            seen_ids[rec.id] = line
        records.append(rec)
    if not records and not problems:
        problems.append(Problem(source, 1, "file holds no rows"))
    return records, problems


def read_records(path: str | Path, fmt: str = "auto", skip_invalid: bool = False,
                 skipped: list[Problem] | None = None) -> list[Record]:
    """Read every row of `path` as Records.

    Args:
        path: a JSONL file (or a JSON array file).
        fmt: a registered format name, or 'auto' to detect it from the first row's keys.
        skip_invalid: skip invalid rows (logged, and appended to `skipped`) instead of raising.
        skipped: a list that receives the Problems of skipped rows.
    Returns:
        The valid rows, in file order.
    Raises:
        DataError: listing every invalid row, unless skip_invalid.
    """
    records, problems = _read(path, fmt)
    if problems and not skip_invalid:
        raise DataError(problems)
    if problems:
        log.warning("skipped %d invalid row(s) of %s: %s", len(problems), path,
                    "; ".join(str(p) for p in problems[:10]) + (" ..." if len(problems) > 10 else ""))
        if skipped is not None:
            skipped.extend(problems)
    return records


def validate_file(path: str | Path, fmt: str = "auto") -> list[Problem]:
    """Every problem in `path` (empty when valid)."""
    try:
        return _read(path, fmt)[1]
    except FileNotFoundError as e:
        return [Problem(str(path), 0, str(e).split(": ", 1)[-1])]
    except DataError as e:
        return e.problems


def record_to_dict(record: Record, fmt: str | None = None) -> dict[str, Any]:
    """The JSON object for `record` in format `fmt` (default: its own), with its extra keys."""
    out = FORMATS.get(fmt or record.fmt).dump(record)
    return {**out, **{k: v for k, v in record.extra.items() if k not in out}}


def write_records(path: str | Path, records: Iterable[Record], fmt: str | None = None) -> int:
    """Write records as JSONL (a `.json` path gets a JSON array). Written atomically. Returns the row count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [record_to_dict(r, fmt) for r in records]
    with atomic_write(path) as f:  # a failure leaves the old file (or none) and no temporary file
        if path.suffix == ".json":
            f.write(dumps_line(rows, indent=1) + "\n")
        else:
            for row in rows:
                f.write(dumps_line(row) + "\n")
    return len(rows)


def read_lines(path: str | Path) -> list[str]:
    """Non-empty, stripped lines of a text file (instruction lists)."""
    p = resolve_source(path)
    return [ln.strip() for ln in read_text_lines(p) if ln.strip()]

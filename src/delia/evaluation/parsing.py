"""Parse model output the way the paper scores it: the earliest `{...}` object, quote repair, JSON then Python.

Rules (paper, "Evaluation Metrics"; baselines.md §0):
1. Take the earliest `{` and the `}` that closes it. Braces inside quoted strings do not count. Because
   model output mixes quote styles (`{'thought': 'the user's claim'}`), a quote only *opens* a string where a
   value or key can start (after `{ [ , :`) and only *closes* one where a value can end (before `, } ] :` or the
   end of the text); an apostrophe inside a word therefore stays text. If this quote-aware scan never closes,
   plain brace counting (quotes ignored) is the fallback.
2. Parse the span with `json.loads`, then `ast.literal_eval`, then after quote repair (every string the scan
   found is re-quoted as a JSON string; Python `True/False/None` become JSON literals).
3. Success = the result is a dict. A failure keeps the raw text and says why.

`object_closed(text)` is the matching stop predicate for generation: True exactly when rule 1's quote-aware
scan has closed the first object. Once it is True, more text cannot change the parse (the scan reads each
quote's next non-space character, which lies inside the closed span).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

_OPENS_VALUE = "{[,:"  # a quote right after one of these opens a string
_ENDS_VALUE = ",}]:"  # a quote right before one of these closes a string


@dataclass
class Scan:
    """Result of scanning for the earliest object. `end` is the index of the closing brace (None: unclosed)."""

    start: int | None
    end: int | None
    strings: list[tuple[int, int]]  # (opening quote index, closing quote index) of each string found
    quote_aware: bool


_NON_SPACE = re.compile(r"\S")


def _next_non_space(text: str, i: int) -> str | None:
    m = _NON_SPACE.search(text, i)
    return m.group(0) if m else None


def scan_quote_aware(text: str, start: int) -> Scan:
    """Find the brace closing the `{` at `start`, skipping braces inside strings (see module doc)."""
    depth, quote, prev = 0, None, ""
    strings: list[tuple[int, int]] = []
    qstart = 0
    i = start
    while i < len(text):
        c = text[i]
        if quote is not None:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                nxt = _next_non_space(text, i + 1)
                if nxt is None or nxt in _ENDS_VALUE:
                    strings.append((qstart, i))
                    quote, prev = None, c
            i += 1
            continue
        if c in "\"'" and prev in _OPENS_VALUE:
            quote, qstart = c, i
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return Scan(start, i, strings, True)
        if not c.isspace():
            prev = c
        i += 1
    return Scan(start, None, strings, True)


def scan_naive(text: str, start: int) -> Scan:
    """Plain brace counting from `start`, ignoring quotes (the fallback when quotes are unbalanced)."""
    depth = 0
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return Scan(start, i, [], False)
    return Scan(start, None, [], False)


def find_object(text: str) -> Scan:
    """The earliest `{...}` span: quote-aware when it closes, else by plain brace counting."""
    start = text.find("{")
    if start < 0:
        return Scan(None, None, [], True)
    scan = scan_quote_aware(text, start)
    if scan.end is not None:
        return scan
    naive = scan_naive(text, start)
    return naive if naive.end is not None else scan


def object_closed(text: str) -> bool:
    """Stop predicate for generation: the first `{` has been closed (quote-aware rule)."""
    if "}" not in text:  # fast path: most calls happen before any closing brace exists
        return False
    start = text.find("{")
    return start >= 0 and scan_quote_aware(text, start).end is not None


_PY_LITERALS = re.compile(r"\b(True|False|None)\b")


def repair_quotes(span: str, strings: Sequence[tuple[int, int]], offset: int = 0) -> str:
    """Re-quote every string found by the scan as a JSON string; map Python literals outside strings."""
    out, pos = [], 0
    for qs, qe in strings:
        qs, qe = qs - offset, qe - offset
        out.append(_PY_LITERALS.sub(lambda m: {"True": "true", "False": "false", "None": "null"}[m.group(1)],
                                    span[pos:qs]))
        inner = span[qs + 1:qe].replace("\\'", "'").replace('\\"', '"')
        out.append(json.dumps(inner, ensure_ascii=False))
        pos = qe + 1
    out.append(_PY_LITERALS.sub(lambda m: {"True": "true", "False": "false", "None": "null"}[m.group(1)],
                                span[pos:]))
    return "".join(out)


@dataclass
class ParseResult:
    """Outcome of parsing one output. `method`: json | python | repaired; `reason` is set when `ok` is False."""

    ok: bool
    value: dict[str, Any] | None
    span: str | None
    method: str | None
    reason: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _err(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"


def parse_output(text: str) -> ParseResult:
    """Apply the paper's rules to a model output.

    Args:
        text: raw generated text.
    Returns:
        ParseResult; `value` is the parsed dict when `ok`.
    """
    scan = find_object(text)
    if scan.start is None:
        return ParseResult(False, None, None, None, "no '{' in the output")
    if scan.end is None:
        return ParseResult(False, None, text[scan.start:], None,
                           f"the first '{{' (char {scan.start}) is never closed")
    span = text[scan.start:scan.end + 1]
    errors, value, method = [], None, None
    try:
        value, method = json.loads(span), "json"
    except (ValueError, RecursionError) as e:
        errors.append(f"json: {_err(e)}")
        try:
            value, method = ast.literal_eval(span), "python"
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError) as e2:
            errors.append(f"python: {_err(e2)}")
            strings = scan.strings if scan.quote_aware else scan_quote_aware(span + "}", 0).strings
            try:
                value, method = json.loads(repair_quotes(span, strings, offset=scan.start if scan.quote_aware
                                                         else 0), strict=False), "repaired"
            except (ValueError, RecursionError) as e3:
                errors.append(f"repaired: {_err(e3)}")
    if method is None:
        return ParseResult(False, None, span, None, "the earliest {...} does not parse (" + "; ".join(errors) + ")")
    if not isinstance(value, dict):
        return ParseResult(False, None, span, method, f"parsed to a {type(value).__name__}, not a dict")
    return ParseResult(True, value, span, method, None)


def check_keys(value: dict[str, Any] | None, keys: Sequence[str]) -> str | None:
    """None when `value` has exactly `keys`; else the reason (missing / extra keys)."""
    if value is None:
        return "not parsed"
    have, want = set(map(str, value)), set(keys)
    if have == want:
        return None
    parts = []
    if want - have:
        parts.append(f"missing {sorted(want - have)}")
    if have - want:
        parts.append(f"extra {sorted(have - want)}")
    return "; ".join(parts)


def extract_label(value: dict[str, Any] | None, key: str, labels: Sequence[str] = ("yes", "no")) -> str | None:
    """The normalised label under `key` ('yes'/'no'), or None when absent or not one of `labels`."""
    if not value or key not in value or not isinstance(value[key], str):
        return None
    label = value[key].strip().strip(".!").lower()
    return label if label in labels else None

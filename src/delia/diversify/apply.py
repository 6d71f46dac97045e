"""Apply instructions to downstream data: find each row's instruction through a user-turn template, then
keep it, replace it with a seeded variant, or replace it with one fixed instruction.

The template names the parts of the last user turn, e.g. the halu data's `"\\n{context}\\n\\n\\n{instruction}"`.
Parsing is the exact inverse of rendering, so a kept row is byte-identical and a rewritten row changes only
its instruction.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Literal

from delia.config import ConfigError
from delia.data import DataError, Problem, Record

HALU_TEMPLATE = "\n{context}\n\n\n{instruction}"
Mode = Literal["keep", "sample", "fixed"]


@dataclass(frozen=True)
class Template:
    """A user-turn layout with one `{instruction}` and at most one `{context}` placeholder."""

    text: str

    def __post_init__(self) -> None:
        if self.text.count("{instruction}") != 1 or self.text.count("{context}") > 1:
            raise ConfigError(f"template {self.text!r} must contain {{instruction}} once and {{context}} at most once")
        if re.search(r"\{(?!instruction\}|context\})[^}]*\}", self.text):
            raise ConfigError(f"template {self.text!r}: only {{context}} and {{instruction}} are placeholders")
        if "{context}{instruction}" in self.text or "{instruction}{context}" in self.text:
            raise ConfigError(f"template {self.text!r}: context and instruction need a separator between them")

    @property
    def regex(self) -> re.Pattern[str]:
        # The context is greedy and the instruction lazy: with the halu template the instruction is the text
        # after the LAST "\n\n\n", so a context that itself contains "\n\n\n" still parses.
        parts = re.split(r"(\{context\}|\{instruction\})", self.text)
        pat = "".join("(?P<context>.*)" if p == "{context}" else "(?P<instruction>.+?)" if p == "{instruction}"
                      else re.escape(p) for p in parts)
        return re.compile(pat, re.DOTALL)

    def parse(self, user: str) -> tuple[str, str] | None:
        """(context, instruction) of a user turn, or None when it does not match."""
        m = self.regex.fullmatch(user)
        if not m or not m.group("instruction").strip():
            return None
        return (m.group("context") if "{context}" in self.text else ""), m.group("instruction")

    def render(self, context: str, instruction: str) -> str:
        # str.replace, not format(): contexts hold braces (the halu responses are dicts).
        return self.text.replace("{context}", context, 1).replace("{instruction}", instruction, 1) \
            if "{context}" in self.text else self.text.replace("{instruction}", instruction, 1)


@dataclass
class Split:
    """A downstream row cut into context and instruction; `turn` indexes the user turn in messages."""

    record: Record
    turn: int
    context: str
    instruction: str


def split_rows(records: list[Record], template: Template) -> list[Split]:
    """Cut every row's last user turn into (context, instruction).

    Raises:
        DataError: every row that has no response or whose user turn does not match, as FILE:LINE: field: reason.
    """
    out, problems = [], []
    sep = _separator_hint(template)
    for r in records:
        line = r.line or 0
        if not (r.response or "").strip():
            problems.append(Problem(r.source or "<memory>", line, "downstream rows need a non-empty response",
                                    "messages"))
            continue
        turn = max(i for i, m in enumerate(r.prompt_messages) if m["role"] == "user")
        parsed = template.parse(r.messages[turn]["content"])
        if parsed is None:
            problems.append(Problem(r.source or "<memory>", line, f"user turn does not match the template "
                                    f"{template.text!r}{sep}", f"messages[{turn}].content"))
            continue
        out.append(Split(r, turn, *parsed))
    if problems:
        raise DataError(problems)
    return out


def _separator_hint(template: Template) -> str:
    literal = [p for p in re.split(r"\{context\}|\{instruction\}", template.text) if p]
    return f" (looked for {', '.join(map(repr, literal))})" if literal else ""


def check_token(instructions: list[tuple[str, int, str]], token: str) -> None:
    """Raise DataError for every (file, line, instruction) that does not contain `token`."""
    problems = [Problem(f, ln, f"instruction does not contain {token}: {text[:80]!r}", "instruction")
                for f, ln, text in instructions if token not in text]
    if problems:
        raise DataError(problems)


def assign(n_rows: int, n_variants: int, rng: random.Random) -> list[int]:
    """Variant index per row: seeded, and balanced (each variant is used n_rows // n_variants or one more
    times) by drawing from reshuffled decks, so no variant is left out by chance when n_rows >= n_variants."""
    out: list[int] = []
    while len(out) < n_rows:
        deck = list(range(n_variants))
        rng.shuffle(deck)
        out += deck
    return out[:n_rows]


def apply_instructions(splits: list[Split], template: Template, mode: Mode, variants: list[str] | None = None,
                       seed: int = 0) -> tuple[list[Record], list[str]]:
    """Rows with their instruction kept (`keep`), replaced by a seeded balanced draw from `variants`
    (`sample`), or replaced by `variants[0]` (`fixed`). Contexts, responses and other turns are unchanged.

    Returns:
        (new Records with ids, sources and lines preserved, in input order; the instruction of each).
    """
    if mode != "keep" and not variants:
        raise ConfigError(f"instruction mode {mode!r} needs at least one instruction")
    picks = assign(len(splits), len(variants), random.Random(seed)) if mode == "sample" else []
    out, chosen = [], []
    for i, s in enumerate(splits):
        instruction = s.instruction if mode == "keep" else variants[0] if mode == "fixed" else variants[picks[i]]
        messages = [dict(m) for m in s.record.messages]
        messages[s.turn]["content"] = template.render(s.context, instruction)
        r = s.record
        out.append(Record(id=r.id, messages=messages, fmt="messages", source=r.source, line=r.line))
        chosen.append(instruction)
    return out, chosen

"""Instruction sets for the halu task and the `--instructions` spec that picks them.

Spec: comma-separated items `SET[-VARIANT][:K]`.
- SET: `seen` (distinct instructions after the last "\\n\\n\\n" of each downstream row of a training file),
  `heldout` (the same, from the authors' validation rows: their held-out phrasings; they must not occur in the
  training rows, see `heldout_overlap`), `unseen` (one instruction per line of a text file), `explicit` (the
  long instruction, placed *before* the context), `own` (each example's own instruction, for chat rows that
  contain one).
- VARIANT (only for sets whose instructions use the special token): `notoken` removes the token (the
  plug-and-play test: does the model still produce the format without it?), `desc` replaces it by a plain
  description of the format.
- K: `all` (default) evaluates every example under every instruction of the set; an integer k gives each
  example k distinct instructions, assigned round-robin over a seeded permutation so every phrasing gets
  (almost) the same number of examples.
Examples: `explicit`, `seen:5,unseen:all`, `unseen:1,unseen-notoken:1,explicit`.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from delia.config import ConfigError

SEP = "\n\n\n"  # between context and instruction in the halu chat rows
EXPLICIT_JOIN = "\n\nConsider the following task:\n"  # explicit instruction + this + context
SETS = ("seen", "heldout", "unseen", "explicit", "own")
VARIANTS = ("notoken", "desc")


@dataclass(frozen=True)
class Instruction:
    """One phrasing. `id` is unique in a run (e.g. `unseen/03`); `position` says where it goes."""

    id: str
    text: str
    set: str
    position: Literal["after", "before"] = "after"


@dataclass(frozen=True)
class SpecItem:
    """One item of the spec: set name, optional variant, k (None = all)."""

    set: str
    variant: str | None
    k: int | None

    @property
    def name(self) -> str:
        return self.set + (f"-{self.variant}" if self.variant else "")


def parse_spec(spec: str) -> list[SpecItem]:
    """Parse `seen:5,unseen,explicit` into SpecItems; raises ConfigError naming the bad item."""
    items: list[SpecItem] = []
    for raw in (s.strip() for s in spec.split(",")):
        if not raw:
            continue
        m = re.fullmatch(r"([a-z]+)(?:-([a-z]+))?(?::(all|\d+))?", raw)
        if not m:
            raise ConfigError(f"instructions: cannot read {raw!r}; expected SET[-VARIANT][:K], e.g. seen:5")
        name, variant, k = m.groups()
        if name not in SETS:
            raise ConfigError(f"instructions: unknown set {name!r} in {raw!r}; known: {', '.join(SETS)}")
        if variant is not None and variant not in VARIANTS:
            raise ConfigError(f"instructions: unknown variant {variant!r} in {raw!r}; known: {', '.join(VARIANTS)}")
        if variant and name == "explicit":
            raise ConfigError(f"instructions: {raw!r}: the explicit instruction has no special token to vary")
        kk = None if k in (None, "all") else int(k)
        if kk is not None and kk < 1:
            raise ConfigError(f"instructions: {raw!r}: k must be >= 1 or 'all'")
        item = SpecItem(name, variant, kk)
        if any(i.name == item.name for i in items):
            raise ConfigError(f"instructions: {item.name!r} appears twice in {spec!r}")
        items.append(item)
    if not items:
        raise ConfigError("instructions: the spec is empty")
    return items


def _instruction_of(rec) -> str | None:
    """The instruction of a downstream chat row (after its last context/instruction separator), else None.

    Rows whose `source` is not `downstream` (the diverse rows of a built training set) and rows without the
    separator are not task rows.
    """
    if rec.extra.get("source", "downstream") != "downstream":
        return None
    users = [m["content"] for m in rec.prompt_messages if m["role"] == "user"]
    if not users or SEP not in users[-1]:
        return None
    return users[-1].rsplit(SEP, 1)[1].strip() or None


def seen_instructions(path: str | Path, limit: int | None = None) -> list[str]:
    """Distinct instructions of a training file (its first `limit` rows), in order of first appearance."""
    from delia.data import read_records

    out: list[str] = []
    for rec in read_records(path)[:limit]:
        text = _instruction_of(rec)
        if text and text not in out:
            out.append(text)
    if not out:
        raise ConfigError(f"{path}: no instructions found (expected user turns 'context\\n\\n\\ninstruction')")
    return out


def vary(text: str, variant: str | None, tokens: list[str], description: str) -> str:
    """Apply a variant: `notoken` drops the special tokens, `desc` swaps them for `description`."""
    if variant is None:
        return text
    for t in tokens:
        text = text.replace(t, "" if variant == "notoken" else description)
    # tidy what removal leaves behind ("the  format", "as ." ) so the prompt reads like plain text
    text = re.sub(r"[ \t]{2,}", " ", text)
    return re.sub(r" ([.,;:?!])", r"\1", text).strip()


def load_set(item: SpecItem, files: dict[str, str], tokens: list[str], description: str) -> list[Instruction]:
    """The instructions of one spec item (`own` has none here: they come with each example)."""
    if item.set == "own":
        return []
    if item.set == "explicit":
        from delia.data.sources import resolve_source

        text = resolve_source(files["explicit"]).read_text(encoding="utf-8").strip()
        if not text:
            raise ConfigError(f"{files['explicit']}: empty explicit instruction file")
        return [Instruction("explicit", text, "explicit", "before")]
    if item.set in ("seen", "heldout"):
        texts = seen_instructions(files[item.set])
    else:
        from delia.data import read_lines

        texts = read_lines(files["unseen"])
    if item.variant and not any(t in x for x in texts for t in tokens):
        raise ConfigError(f"instructions: {item.name!r}: no {item.set} instruction contains {tokens}")
    width = len(str(len(texts) - 1))
    return [Instruction(f"{item.name}/{i:0{width}d}", vary(t, item.variant, tokens, description), item.name)
            for i, t in enumerate(texts)]


def assign(pool: list[Instruction], n_examples: int, k: int | None, seed: int, name: str) -> list[list[Instruction]]:
    """Instructions per example: all of them (k None), or k each, round-robin over a seeded permutation."""
    if k is None or k >= len(pool):
        return [list(pool) for _ in range(n_examples)]
    perm = list(pool)
    random.Random(f"{seed}:{name}").shuffle(perm)
    return [[perm[(i * k + j) % len(perm)] for j in range(k)] for i in range(n_examples)]


def heldout_overlap(heldout: str | Path, train: str | Path, limit: int | None = None) -> dict[str, int]:
    """Held-out phrasings that also occur in the first `limit` rows of `train`, each with the 1-based row of its
    first occurrence there (empty: every phrasing is truly held out)."""
    from delia.data import read_records

    held = set(seen_instructions(heldout))
    found: dict[str, int] = {}
    for i, rec in enumerate(read_records(train)[:limit], 1):
        text = _instruction_of(rec)
        if text in held:
            found.setdefault(text, i)
    return found


def check_heldout(spec: str, heldout: str | Path, seen: str | Path) -> None:
    """Raise ConfigError when the spec uses `heldout` and any of its phrasings occurs in the training file `seen`
    (the model trained on it, so it is not held out)."""
    if not any(i.set == "heldout" for i in parse_spec(spec)):
        return
    found = heldout_overlap(heldout, seen)
    if found:
        rows = ", ".join(str(r) for r in sorted(found.values()))
        raise ConfigError(f"halu.heldout_file ({heldout}): {len(found)} of its phrasings also occur in "
                          f"halu.seen_file ({seen}, rows {rows}), so they are not held out; set halu.seen_file to "
                          "the rows the model trained on, or halu.heldout_file to other phrasings")

"""Pure text helpers for instruction variants: token counting, similarity, filtering and diversity statistics."""

from __future__ import annotations

import difflib
import itertools
import random
import re
from collections import Counter
from dataclasses import dataclass
from typing import Literal

Similarity = Literal["ratio", "jaccard"]

# A word, or a special token such as <sep> kept whole so that it counts as one word.
_WORD = re.compile(r"<[^<>\s]+>|\w+(?:'\w+)?")


def words(text: str) -> list[str]:
    """Lower-cased words of `text`; special tokens like `<sep>` stay one word."""
    return _WORD.findall(text.lower())


def normalize(text: str) -> str:
    """Collapse all whitespace (newlines included) to single spaces: an instruction is one line of text."""
    return " ".join(text.split())


def ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def similarity(a: str, b: str, kind: Similarity = "ratio") -> float:
    """Similarity in [0, 1] of two instructions.

    Args:
        kind: 'ratio' = difflib's matching-blocks ratio over word sequences (order matters);
            'jaccard' = Jaccard index of the word 1- and 2-gram sets (order mostly ignored).
    """
    wa, wb = words(a), words(b)
    if kind == "ratio":
        return difflib.SequenceMatcher(None, wa, wb, autojunk=False).ratio()
    sa = set(ngrams(wa, 1)) | set(ngrams(wa, 2))
    sb = set(ngrams(wb, 1)) | set(ngrams(wb, 2))
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


@dataclass
class FilterConfig:
    """What a kept variant must satisfy."""

    token: str
    min_count: int = 1
    max_count: int = 2
    min_chars: int = 15
    max_chars: int = 400
    max_similarity: float = 0.8
    similarity: Similarity = "ratio"


def reject_reason(text: str, kept: list[str], cfg: FilterConfig) -> str | None:
    """Why `text` cannot join `kept` (None when it can): token count, length, exact or near duplicate."""
    if not text:
        return "empty"
    if cfg.token:
        c = text.count(cfg.token)
        if not cfg.min_count <= c <= cfg.max_count:
            return f"contains {cfg.token} {c} time(s); need {cfg.min_count}..{cfg.max_count}"
    if not cfg.min_chars <= len(text) <= cfg.max_chars:
        return f"{len(text)} characters; need {cfg.min_chars}..{cfg.max_chars}"
    low = text.lower()
    for i, other in enumerate(kept):
        if other.lower() == low:
            return f"duplicate of kept #{i}"
        s = similarity(text, other, cfg.similarity)
        if s >= cfg.max_similarity:
            return f"near-duplicate of kept #{i} ({cfg.similarity} similarity {s:.2f} >= {cfg.max_similarity})"
    return None


def filter_variants(candidates: list[str], cfg: FilterConfig, kept: list[str] | None = None,
                    limit: int | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """Greedily keep candidates that pass `reject_reason` against everything kept so far.

    Args:
        candidates: raw variants (whitespace is normalised first).
        kept: variants already accepted (extended in place).
        limit: stop once `kept` holds this many (later candidates are left unexamined).
    Returns:
        (kept, rejected) where rejected holds (text, reason) pairs: nothing examined disappears without a reason.
    """
    kept = [] if kept is None else kept
    rejected: list[tuple[str, str]] = []
    for raw in candidates:
        if limit is not None and len(kept) >= limit:
            break
        text = normalize(raw)
        reason = reject_reason(text, kept, cfg)
        if reason:
            rejected.append((text, reason))
        else:
            kept.append(text)
    return kept, rejected


def diversity_stats(texts: list[str], token: str = "", kind: Similarity = "ratio",
                    max_pairs: int = 50_000, seed: int = 0) -> dict[str, float | int]:
    """Diversity of a set of instructions.

    Returns:
        n; distinct_1 / distinct_2 (unique word 1-/2-grams over all 1-/2-grams); mean_similarity and
        max_similarity over pairs (all pairs, or a seeded sample of `max_pairs`); mean/min/max words;
        distinct_first_words (verb variety); token_start/middle/end (share of variants whose first token
        occurrence lies in each third of the text: position variety).
    """
    ws = [words(t) for t in texts]
    uni = [g for w in ws for g in ngrams(w, 1)]
    bi = [g for w in ws for g in ngrams(w, 2)]
    pairs = list(itertools.combinations(range(len(texts)), 2)) if len(texts) * (len(texts) - 1) // 2 <= max_pairs \
        else [tuple(random.Random(seed).sample(range(len(texts)), 2)) for _ in range(max_pairs)]
    sims = [similarity(texts[i], texts[j], kind) for i, j in pairs]
    out: dict[str, float | int] = {
        "n": len(texts),
        "distinct_1": len(set(uni)) / len(uni) if uni else 0.0,
        "distinct_2": len(set(bi)) / len(bi) if bi else 0.0,
        "mean_similarity": sum(sims) / len(sims) if sims else 0.0,
        "max_similarity": max(sims, default=0.0),
        "mean_words": sum(map(len, ws)) / len(ws) if ws else 0.0,
        "min_words": min(map(len, ws), default=0),
        "max_words": max(map(len, ws), default=0),
        "distinct_first_words": len({w[0] for w in ws if w}),
    }
    if token:
        pos = Counter()
        for t in texts:
            i = t.find(token)
            if i >= 0:
                rel = (i + len(token) / 2) / max(len(t), 1)
                pos["start" if rel < 1 / 3 else "middle" if rel < 2 / 3 else "end"] += 1
        for k in ("start", "middle", "end"):
            out[f"token_{k}"] = pos[k] / len(texts) if texts else 0.0
    return out

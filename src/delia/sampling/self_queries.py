"""Data-free queries (Magpie): the model writes the queries itself from its chat template's empty user turn.

The chat template is rendered up to where a user turn's content starts (for ChatML, after the system turn
the template injects: `...<|im_start|>user\\n`); sampling from there makes an aligned model write a typical
user request, ended by its end-of-turn token. Samples are cleaned, length-filtered and deduplicated (exact
after normalisation, and near duplicates by word-shingle Jaccard similarity) until exactly N remain.
"""

from __future__ import annotations

import logging
import re
from collections import defaultdict
from dataclasses import dataclass

from delia.config import opt
from delia.errors import UserError
from delia.generation import GenParams

log = logging.getLogger(__name__)

_SENTINEL = "\x00DELIA_QUERY\x00"


class SelfQueryError(UserError, RuntimeError):
    """Not enough distinct queries after the allowed attempts; the message says what was kept and rejected."""


@dataclass
class SelfQueryConfig:
    """How the model writes its own queries."""

    max_new_tokens: int = opt(128, help="Token budget per query.")
    temperature: float = opt(1.0, help="Sampling temperature for queries (Magpie uses 1.0).")
    top_p: float = opt(1.0, help="Nucleus for queries.")
    min_words: int = opt(3, help="Drop queries with fewer words.")
    max_chars: int = opt(2000, help="Drop queries longer than this.")
    near_dup: float = opt(0.7, help="Drop a query whose word-3-shingle Jaccard similarity to a kept one is >= this.")
    drop_truncated: bool = opt(True, help="Drop queries that hit max_new_tokens before the end of the turn.")
    oversample: float = opt(1.5, help="Samples per missing query in each round.")
    max_rounds: int = opt(8, help="Give up (with an error) after this many rounds.")
    prefix: str | None = opt(None, help="Raw prompt prefix; default: rendered from the model's chat template.")

    def __post_init__(self) -> None:
        if not 0 < self.near_dup <= 1:
            raise ValueError(f"self_query.near_dup must be in (0, 1], got {self.near_dup}")
        if self.oversample < 1 or self.max_rounds < 1 or self.max_new_tokens < 1:
            raise ValueError("self_query.oversample must be >= 1, max_rounds and max_new_tokens >= 1")


def magpie_prefix(tokenizer) -> tuple[str, str]:
    """(prefix, end-of-turn text): the chat template rendered up to an empty user turn's content start.

    Rendering a sentinel as the user message and cutting there works for any template, including those
    that inject a default system turn (SmolLM2's ChatML does).
    """
    text = tokenizer.apply_chat_template([{"role": "user", "content": _SENTINEL}], tokenize=False,
                                         add_generation_prompt=False)
    if _SENTINEL not in text:
        raise SelfQueryError("the chat template does not place the user message verbatim; set self_query.prefix")
    prefix, after = text.split(_SENTINEL, 1)
    return prefix, after.strip()


def normalise(text: str) -> str:
    """Lowercase, words only: the exact-duplicate key."""
    return " ".join(re.findall(r"\w+", text.lower()))


def _shingles(norm: str, n: int = 3) -> set[str]:
    words = norm.split()
    return {" ".join(words[i:i + n]) for i in range(max(1, len(words) - n + 1))}


class QueryFilter:
    """Keeps distinct queries: length filters, exact and near-duplicate removal (shingle inverted index).

    `reasons` counts why samples were rejected.
    """

    def __init__(self, cfg: SelfQueryConfig) -> None:
        self.cfg = cfg
        self.kept: list[str] = []
        self._exact: set[str] = set()
        self._shingles: list[set[str]] = []
        self._index: dict[str, list[int]] = defaultdict(list)
        self.reasons: dict[str, int] = defaultdict(int)

    def offer(self, text: str, truncated: bool = False) -> bool:
        """Keep `text` if it passes every filter; returns whether it was kept."""
        text = text.strip()
        norm = normalise(text)
        reason = None
        if truncated and self.cfg.drop_truncated:
            reason = "truncated"
        elif len(norm.split()) < self.cfg.min_words:
            reason = "too short"
        elif len(text) > self.cfg.max_chars:
            reason = "too long"
        elif norm in self._exact:
            reason = "exact duplicate"
        else:
            sh = _shingles(norm)
            candidates = {j for s in sh for j in self._index.get(s, ())}
            if any(len(sh & self._shingles[j]) / len(sh | self._shingles[j]) >= self.cfg.near_dup
                   for j in candidates):
                reason = "near duplicate"
        if reason:
            self.reasons[reason] += 1
            return False
        sh = _shingles(norm)
        for s in sh:
            self._index[s].append(len(self.kept))
        self.kept.append(text)
        self._exact.add(norm)
        self._shingles.append(sh)
        return True


def self_queries(engine, n: int, cfg: SelfQueryConfig, seed: int = 0, prefix: str | None = None) -> list[str]:
    """Exactly `n` distinct queries written by the engine's model.

    Args:
        engine: any delia engine (string prompts are sent raw: no chat template is applied on top).
        n: queries wanted.
        cfg: filters and sampling settings.
        seed: base seed; each round uses a different one.
        prefix: the raw prompt; default `cfg.prefix`, else rendered from `engine.tokenizer`'s chat template.
    Returns:
        `n` queries in the order they were kept.
    Raises:
        SelfQueryError: fewer than `n` distinct queries after `cfg.max_rounds` rounds.
    """
    prefix = prefix or cfg.prefix
    stop: list[str] = []
    if prefix is None:
        tok = getattr(engine, "tokenizer", None)
        if tok is None:
            raise SelfQueryError(f"the {engine.name} engine has no tokenizer to render the chat template; "
                                 "set self_query.prefix to the raw text that opens a user turn")
        prefix, end = magpie_prefix(tok)
        stop = [end] if end else []
    flt = QueryFilter(cfg)
    for rnd in range(cfg.max_rounds):
        missing = n - len(flt.kept)
        if missing <= 0:
            break
        asks = max(missing, int(missing * cfg.oversample + 0.5))
        params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                           seed=seed + 7919 * rnd, stop=stop)
        for g in engine.generate([prefix] * asks, params):
            if len(flt.kept) == n:
                break
            flt.offer(g.text, truncated=g.finish_reason == "length")
        log.info("self-queries round %d: %d/%d kept; rejected %s", rnd + 1, len(flt.kept), n, dict(flt.reasons))
    if len(flt.kept) < n:
        raise SelfQueryError(f"only {len(flt.kept)} of {n} distinct queries after {cfg.max_rounds} rounds "
                             f"(rejected: {dict(flt.reasons)}); raise self_query.max_rounds or relax the filters")
    return flt.kept

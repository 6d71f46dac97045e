"""DiPMT (Ghazvininejad et al. 2023; baselines.md §7): dictionary-based prompting for translation.

No en-is dictionary is assumed: a lexicon is induced from the training bitext by sentence-level Dice
co-occurrence (pairs seen >= 2 times with Dice >= 0.3, at most 2 translations per word). Only rare source
words (outside the 1,000 most frequent training-side words) that the lexicon knows get hints, at most 5,
rarest first. The prompt follows the public re-implementation's template.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    """Lowercased word tokens."""
    return WORD.findall(text.lower())


@dataclass
class Lexicon:
    """Induced translations per source word, and source-word frequencies of the training side."""

    entries: dict[str, list[str]]
    freq: Counter

    def frequent(self, top: int = 1000) -> set[str]:
        return {w for w, _ in self.freq.most_common(top)}


def induce_lexicon(pairs: Sequence[tuple[str, str]], min_count: int = 2, min_dice: float = 0.3,
                   max_translations: int = 2) -> Lexicon:
    """Dice lexicon from sentence pairs: dice(s, t) = 2 c(s, t) / (c(s) + c(t)) over sentences containing them.

    Args:
        pairs: (source, target) sentences.
        min_count: minimum co-occurrence count c(s, t).
        min_dice: minimum Dice coefficient.
        max_translations: translations kept per source word (highest Dice first, then alphabetical).
    """
    cs, ct, cst = Counter(), Counter(), Counter()
    freq: Counter = Counter()
    for src, tgt in pairs:
        s_words, t_words = set(words(src)), set(words(tgt))
        freq.update(words(src))
        cs.update(s_words)
        ct.update(t_words)
        cst.update((s, t) for s in s_words for t in t_words)
    cand: dict[str, list[tuple[float, str]]] = {}
    for (s, t), c in cst.items():
        if c < min_count:
            continue
        dice = 2 * c / (cs[s] + ct[t])
        if dice >= min_dice:
            cand.setdefault(s, []).append((dice, t))
    entries = {s: [t for _, t in sorted(ts, key=lambda x: (-x[0], x[1]))[:max_translations]]
               for s, ts in cand.items()}
    return Lexicon(entries, freq)


def select_hints(sentence: str, lex: Lexicon, max_hints: int = 5,
                 frequent_top: int = 1000) -> list[tuple[str, list[str]]]:
    """(word, translations) for the rare lexicon words of `sentence`: rarest first, at most `max_hints`."""
    frequent = lex.frequent(frequent_top)
    seen: dict[str, int] = {}
    for i, w in enumerate(words(sentence)):
        if w not in seen and w not in frequent and w in lex.entries:
            seen[w] = i
    ranked = sorted(seen, key=lambda w: (lex.freq[w], seen[w]))
    return [(w, lex.entries[w]) for w in ranked[:max_hints]]


def hint_line(hints: Sequence[tuple[str, list[str]]]) -> str:
    """'In this context, the word "w1" means "t1"; the word "w2" means "t2a" or "t2b".' ('' without hints)."""
    if not hints:
        return ""
    parts = [f'the word "{w}" means ' + " or ".join(f'"{t}"' for t in ts) for w, ts in hints]
    return "In this context, " + "; ".join(parts) + "."


def block(src: str, tgt_lang: str, hints: Sequence[tuple[str, list[str]]], ref: str | None) -> str:
    lines = [f"Translate the following sentence to {tgt_lang}: {src}"]
    if hints:
        lines.append(hint_line(hints))
    lines.append(f"The full translation to {tgt_lang} is:" + (f" {ref}" if ref is not None else ""))
    return "\n".join(lines)


def dipmt_prompt(src: str, tgt_lang: str, lex: Lexicon, demos: Sequence[tuple[str, str]],
                 frequent_top: int = 1000) -> str:
    """k demonstrations (with references) then the query, which stops after 'is:'. One user turn."""
    hints = lambda s: select_hints(s, lex, frequent_top=frequent_top)  # noqa: E731
    parts = [block(s, tgt_lang, hints(s), r) for s, r in demos]
    parts.append(block(src, tgt_lang, hints(src), None))
    return "\n\n".join(parts)


def pick_pairs(pool: Sequence[tuple[str, str]], k: int, index: int, src: str) -> list[tuple[str, str]]:
    """k demonstrations per test sentence (seed = the sentence's index), never the sentence itself."""
    candidates = [p for p in pool if p[0].strip() != src.strip()]
    return random.Random(index).sample(candidates, min(k, len(candidates)))

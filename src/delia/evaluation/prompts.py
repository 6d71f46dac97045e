"""Examples and prompt building for the two tasks (pure functions; parsing lives in `parsing.py`).

halu: a test row is `{"context", "label"}`; a chat row is `"\\n" + context + "\\n\\n\\n" + instruction` with a
Python-dict reply (its 'hallucination' value is the label). The prompt puts an instruction after the context
exactly as in training, or the explicit instruction before it (data README).
translation: `{"src", "ref", "src_lang", "tgt_lang"}` rows; one user turn from a template; the reply is
cleaned of a "Sure, here is the translation:" preamble and, by default, cut to its first non-empty line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from delia.data import DataError, Problem, Record
from delia.evaluation.instructions import EXPLICIT_JOIN, SEP, Instruction
from delia.evaluation.parsing import extract_label, parse_output


@dataclass(frozen=True)
class HaluExample:
    """One halu example; `gold` (the reference reply) and `own` (its instruction) exist for chat rows only."""

    id: str
    context: str
    label: str | None
    gold: str | None = None
    own: str | None = None
    where: str = ""


def halu_example(rec: Record, label_key: str = "hallucination") -> HaluExample:
    """Normalise a `halu_test` or chat `messages` record; raises DataError naming the file and line."""
    if rec.fmt == "halu_test":
        return HaluExample(rec.id, rec.fields["context"], rec.fields["label"], where=rec.where)
    users = [m["content"] for m in rec.prompt_messages if m["role"] == "user"]
    if len(users) != 1:
        raise DataError([Problem(rec.source or "<memory>", rec.line or 0, "expected exactly one user turn",
                                 "messages")])
    text = users[0]
    if SEP not in text:
        raise DataError([Problem(rec.source or "<memory>", rec.line or 0,
                                 "user turn has no '\\n\\n\\n' between context and instruction", "messages")])
    context, own = text.rsplit(SEP, 1)
    context = context[1:] if context.startswith("\n") else context
    label = extract_label(parse_output(rec.response).value, label_key) if rec.response else None
    return HaluExample(rec.id, context, label, rec.response, own.strip(), rec.where)


def halu_prompt(ex: HaluExample, ins: Instruction) -> list[dict[str, str]]:
    """The user turn for `ex` under instruction `ins` (chat messages; the chat template is applied later)."""
    if ins.position == "before":
        content = ins.text + EXPLICIT_JOIN + ex.context
    else:
        content = "\n" + ex.context + SEP + ins.text
    return [{"role": "user", "content": content}]


# ---------------------------------------------------------------- translation

LANGS = {"en": "English", "is": "Icelandic", "de": "German", "fr": "French", "cs": "Czech", "ru": "Russian",
         "zh": "Chinese", "ja": "Japanese", "ha": "Hausa", "pl": "Polish", "es": "Spanish"}


@dataclass(frozen=True)
class TranslationExample:
    id: str
    src: str
    ref: str
    src_lang: str
    tgt_lang: str
    where: str = ""


def translation_example(rec: Record) -> TranslationExample:
    """Normalise a `translation` record; the language codes are required to build the prompt."""
    f = rec.fields
    missing = [k for k in ("src_lang", "tgt_lang") if k not in f]
    if rec.fmt != "translation" or missing:
        raise DataError([Problem(rec.source or "<memory>", rec.line or 0,
                                 f"expected a translation row with src, ref, src_lang, tgt_lang (missing {missing})",
                                 missing[0] if missing else None)])
    return TranslationExample(rec.id, f["src"], f["ref"], f["src_lang"], f["tgt_lang"], rec.where)


def translation_prompt(ex: TranslationExample, template: str) -> list[dict[str, str]]:
    """Fill `template` ({src}, {src_lang}, {tgt_lang}: language names where known) as one user turn."""
    content = template.format(src=ex.src, src_lang=LANGS.get(ex.src_lang, ex.src_lang),
                              tgt_lang=LANGS.get(ex.tgt_lang, ex.tgt_lang))
    return [{"role": "user", "content": content}]


# "Sure, here is the translation:", "Here's the Icelandic translation:", "Translation:" ... at the very start
_PREAMBLE = re.compile(
    r"^\s*(?:(?:sure|certainly|of course|okay|ok)\b[,.!]?\s*)?"
    r"(?:(?:here(?:'s| is)|below is|this is)\s+)?(?:(?:the|a|my|your)\s+)?"
    r"(?:[\w-]+\s+){0,3}?translation\b[^:\n]{0,40}:[ \t]*\n*", re.IGNORECASE)


def clean_translation(text: str, first_line: bool = True) -> str:
    """Strip a translation preamble, optionally keep only the first non-empty line, drop wrapping quotes."""
    text = _PREAMBLE.sub("", text, count=1).strip()
    if first_line:
        text = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'“”":
        text = text[1:-1].strip()
    elif len(text) >= 2 and text[0] == "“" and text[-1] == "”":
        text = text[1:-1].strip()
    return text


def translation_done(text: str) -> bool:
    """Stop predicate with `first_line`: a non-empty line after the preamble has been ended by a newline."""
    rest = _PREAMBLE.sub("", text, count=1).lstrip()
    return "\n" in rest and bool(rest.split("\n", 1)[0].strip())

"""Pure prompt building for self-sampling: queries from records, the authors' one-shot prompt, output rows.

`query_of(record)` / `sample_prompt(query, reference)` / `sample_row(...)` are pure, so the exact prompts
and rows are testable without a model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from delia.data.records import FieldError, Record
from delia.generation import Generation


@dataclass(frozen=True)
class Query:
    """One query to answer: its id, user text and optional reference answer (shown as a one-shot demo)."""

    id: str
    text: str
    reference: str | None = None
    where: str = field(default="", compare=False)  # FILE:LINE of the row it came from, for messages


def query_of(record: Record) -> Query:
    """The Query of a single-turn record (Alpaca: instruction + "\\n\\n" + input; `output` is the reference).

    Raises:
        FieldError: the record is not one user turn (optionally after a system turn).
    """
    turns = [t for t in record.prompt_messages if t["role"] != "system"]
    if len(turns) != 1 or turns[0]["role"] != "user":
        raise FieldError("messages", f"a query must be one user turn (optionally with an answer); got roles "
                                     f"{[t['role'] for t in record.messages]}")
    if not turns[0]["content"].strip():
        raise FieldError("messages", "empty query")
    return Query(record.id, turns[0]["content"], record.response or None, record.where)


def sample_prompt(query: Query, one_shot: bool = True) -> list[dict[str, str]]:
    """The authors' prompt: [user q, assistant reference, user q] when a reference exists, else [user q]."""
    if one_shot and query.reference:
        return [{"role": "user", "content": query.text}, {"role": "assistant", "content": query.reference},
                {"role": "user", "content": query.text}]
    return [{"role": "user", "content": query.text}]


def sample_row(query: Query, key: str, gen: Generation, model: str, params: dict[str, Any],
               engine: str, seed: int) -> dict[str, Any]:
    """The cache row (team interface 1): a chat `messages` record with provenance in `meta`."""
    return {
        "id": query.id,
        "key": key,
        "messages": [{"role": "user", "content": query.text}, {"role": "assistant", "content": gen.text}],
        "meta": {"model": model, "engine": engine, "params": params, "seed": seed, "finish_reason": gen.finish_reason,
                 "n_new_tokens": gen.n_new_tokens, "n_prompt_tokens": gen.n_prompt_tokens,
                 "one_shot": params.get("one_shot", False) and query.reference is not None},
    }

"""`EvalRow`: one prompt the eval stage answers (built by a task, see `delia.task`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class EvalRow:
    """One prompt to answer: an example under one instruction (halu, custom tasks) or one sentence
    (translation)."""

    example_id: str
    instruction_id: str
    set: str
    prompt: list[dict[str, str]]
    gold: str | None = None  # reference reply (chat rows, custom tasks) or reference translation
    fields: dict[str, Any] = field(default_factory=dict)  # gold_label / src / ref
    where: str = ""  # FILE:LINE of the example, for messages


def read_examples(path: str, make) -> list:
    """`make(record)` for every record of `path`; every row it rejects is reported together.

    Raises:
        DataError: FILE:LINE: field: reason for each row the task cannot use.
    """
    from delia.data import DataError, read_records

    examples, problems = [], []
    for rec in read_records(path):
        try:
            examples.append(make(rec))
        except DataError as e:
            problems += e.problems
    if problems:
        raise DataError(problems)
    return examples

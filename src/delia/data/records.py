"""The normalised record type and the problems reported about input files."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from delia.errors import UserError

ROLES = ("system", "user", "assistant", "tool")


@dataclass
class Record:
    """One example, in any input format, normalised to chat messages.

    Attributes:
        id: the row's `id` field, else `<file stem>:<line>`.
        messages: the chat view. Training rows end with an assistant turn; test rows (halu test,
            queries without answers) end with a user turn.
        fields: the format's own fields (e.g. `label`, `context`, `src`/`ref`, `instruction`/`input`/`output`)
            so that writing back in the same format is lossless.
        fmt: name of the format the row was read as.
        source: file the row came from (None when built in code).
        line: 1-based line of the row in `source`.
        extra: keys the format does not know, preserved and written back.
    """

    id: str
    messages: list[dict[str, str]]
    fields: dict[str, Any] = field(default_factory=dict)
    fmt: str = "messages"
    source: str | None = None
    line: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_messages(self) -> list[dict[str, str]]:
        """All turns before the final assistant turn (the whole chat if it ends with a user turn)."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[:-1]
        return list(self.messages)

    @property
    def response(self) -> str | None:
        """The final assistant turn, or None when the record has no answer."""
        if self.messages and self.messages[-1]["role"] == "assistant":
            return self.messages[-1]["content"]
        return None

    @property
    def where(self) -> str:
        """`file:line` for messages about this row."""
        return f"{self.source or '<memory>'}:{self.line or '?'}"


@dataclass(frozen=True)
class Problem:
    """A reason a row is invalid; prints as `FILE:LINE: field: reason` (`FILE: reason` for line 0, the file)."""

    file: str
    line: int
    reason: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"{self.field}: " if self.field else ""
        line = f":{self.line}" if self.line else ""  # line 0: the file as a whole (missing, a directory)
        return f"{self.file}{line}: {where}{self.reason}"


class DataError(UserError, ValueError):
    """Invalid input data. `problems` lists every invalid row; the message shows the first ones."""

    def __init__(self, problems: list[Problem], limit: int = 20) -> None:
        self.problems = problems
        shown = "\n".join(str(p) for p in problems[:limit])
        more = f"\n... and {len(problems) - limit} more" if len(problems) > limit else ""
        head = f"{len(problems)} invalid row(s):\n" if any(p.line for p in problems) else ""
        super().__init__(f"{head}{shown}{more}")


class FieldError(ValueError):
    """Raised by a format's parser: `field` names the offending key (dotted path)."""

    def __init__(self, field: str | None, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}" if field else reason)

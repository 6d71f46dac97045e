"""What each command accepts as input, in one table, for `delia data validate --for USE`.

Every check here is the very function the command calls on its input (not a copy of its rules), so
`validate --for train` accepts exactly the files `delia train` accepts. Rules that hold for every command
(valid UTF-8 JSON rows of one format, role order, no empty user turns, ...) are in `delia.data`; these add
what one use needs (training needs a final assistant reply, sampling one user turn per query, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from delia.data import DataError, Problem


def _train(path: str) -> None:
    from delia.training.data import read_training_records

    read_training_records(path)


def _sample(path: str) -> None:
    from delia.sampling import load_queries

    load_queries(path)


def _build(path: str) -> None:
    from delia.diversify.apply import Template
    from delia.mixing.build import read_downstream
    from delia.mixing.config import BuildConfig

    template = next(f.default for f in BuildConfig.__dataclass_fields__.values() if f.name == "template")
    read_downstream(path, Template(template))


def _cache(path: str) -> None:
    from delia.mixing.cache import scan_cache

    scan_cache(path)


def _eval(task: str) -> Callable[[str], None]:
    def check(path: str) -> None:
        from delia.task import get_task

        get_task(task).load_examples(path)
    return check


USES: dict[str, tuple[str, Callable[[str], None]]] = {
    "train": ("training data (`delia train --data`)", _train),
    "build": ("downstream rows (`delia build --downstream`, default template)", _build),
    "cache": ("a diverse cache (`delia build --diverse`)", _cache),
    "sample": ("queries (`delia sample --queries`)", _sample),
    "eval-halu": ("halu examples (`delia eval --data`)", _eval("halu")),
    "eval-translation": ("translation examples (`delia eval --task translation --data`)", _eval("translation")),
    **{f"eval-{t}": (f"{t} task examples: {{input, output}}, chat or prompt/completion rows whose user turn is "
                     f"custom.template's default (`delia eval --task {t} --data`)", _eval(t))
       for t in ("json", "label", "text")},
}


# uses whose reader also accepts rows of no registered format ({"input", "output"} examples of a custom task):
# the generic format check does not apply to them, their own reader reports every row
OWN_READER = {f"eval-{t}" for t in ("json", "label", "text")}


def check_use(path: str | Path, use: str) -> list[Problem]:
    """Every problem `use` finds in `path` (empty when the command would accept it)."""
    try:
        USES[use][1](str(path))
    except DataError as e:
        return e.problems
    except FileNotFoundError as e:
        return [Problem(str(path), 0, str(e).split(": ", 1)[-1])]
    return []

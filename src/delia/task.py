"""The task interface and its registry: what varies between evaluation tasks, behind one name.

A task owns its examples (loading and validating them), its evaluation rows (prompt layout, instruction sets),
the stop rule, the parser and scorer (`predict`), its metrics and their typed schema, its special tokens, and
what the experiment planner needs to know about it (a training-row transform, the build token, where "seen"
phrasings come from, the drift leakage keys). Stages ask `get_task(name)` and never branch on a task's name.

Implementations are plug-ins (`delia.tasks.*`), imported by module name on first lookup, so this bottom-layer
module imports none of them; `check_task` validates a name without importing anything.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from delia.config import ConfigError
from delia.registry import registry

# name -> the plug-in module that registers it (one module may hold several tasks)
TASKS = registry("task")
for _name, _module, _help in [
    ("halu", "delia.tasks.halu", "the paper's formatted generation: a JSON verdict on a ChatGPT reply"),
    ("translation", "delia.tasks.translation", "the paper's translation: BLEU / chrF++ (src/ref rows)"),
    ("json", "delia.tasks.custom", "your task: a JSON object with required keys and allowed values (YAML only)"),
    ("label", "delia.tasks.custom", "your task: one label from a set; per-class P/R/F1 (YAML only)"),
    ("text", "delia.tasks.custom", "your task: free text scored by exact match, chrF, BLEU (YAML only)"),
]:
    TASKS.add(_name, _module, help=_help)

_LOADED: dict[str, Task] = {}


@dataclass(frozen=True)
class MetricSpec:
    """One per-set metric a task reports (`metrics.json["sets"][SET][name]`, with its interval).

    Attributes:
        name: key in metrics.json and (as `SET.name`) in an experiment's results.
        kind: `rate` (a share in [0, 1], shown as %), `score` (e.g. BLEU on 0-100) or `value` (anything else).
        higher_is_better: the direction a comparison reads.
        robustness: its per-phrasing spread is flattened into results (`SET.name.phrasing_min` ...).
    """

    name: str
    kind: Literal["rate", "score", "value"] = "rate"
    higher_is_better: bool = True
    robustness: bool = False


@dataclass(frozen=True)
class TokenOptions:
    """The special tokens a task's prompts may use and how a model that lacks them gets them."""

    tokens: list[str]
    init: str = "random"
    seed: int = 2024
    description: str | None = None


class Task:
    """Defaults for a task without instructions, tokens or planner needs; plug-ins override what they own.

    Methods take the stage's config (`EvalConfig`) as `cfg`; rows are `delia.evaluation.rows.EvalRow`.
    """

    name: str = ""
    options_key: str = "halu"  # the EvalConfig field holding this task's options (`--instructions` goes there)
    capabilities: frozenset[str] = frozenset()  # e.g. special_token, seen_from_training, heldout, format_facts
    train_transform: str | None = None  # a registered transform turning training rows into chat rows
    build_fields: dict[str, Any] = {}  # build-stage fields the task fixes (translation: no special token)

    def supports(self, capability: str) -> bool:
        return capability in self.capabilities

    # -- examples and rows
    def load_examples(self, path: str, cfg: Any = None) -> list[Any]:
        """The task's examples of a file; raises DataError naming FILE:LINE for every row it cannot use."""
        raise NotImplementedError

    def check(self, cfg: Any) -> None:
        """Pre-flight checks before any output exists (raise ConfigError)."""

    def rows(self, cfg: Any) -> list[Any]:
        """Every prompt to answer (EvalRows), built from `cfg.data`."""
        raise NotImplementedError

    def instructions(self, cfg: Any) -> str | None:
        """The instruction spec recorded in metrics.json (None: the task has no phrasings)."""
        return None

    # -- generation
    def stop_fn(self, cfg: Any) -> Callable[[str], bool] | None:
        """Stop a row once this returns True for its text (None: stop at the end of the turn)."""
        return None

    def cache_ident(self, cfg: Any) -> Any:
        """The task's piece of the generation cache key (what changes the generated text besides the prompt)."""
        return False

    def token_options(self, cfg: Any) -> TokenOptions | None:
        return None

    def hidden_token(self, cfg: Any) -> str | None:
        """The special token whose hidden states are compared with concept words (None: no analysis)."""
        return None

    def gold_fallback(self, cfg: Any) -> str | None:
        """A training file whose replies size the generation budget when the rows carry no gold."""
        return None

    # -- scoring
    def predict(self, row: Any, gen: Any, cfg: Any) -> dict[str, Any]:
        """The predictions.jsonl record of one row: raw text, parse, outcome, scores."""
        raise NotImplementedError

    def metrics(self, preds: list[dict[str, Any]], cfg: Any) -> dict[str, Any]:
        """Per set (with intervals) and per phrasing, from the predictions."""
        raise NotImplementedError

    def enrich(self, preds: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Saved predictions with outcome fields that runs older than them lack (default: as saved)."""
        return preds

    def rescore(self, preds: list[dict[str, Any]], n_boot: int, seed: int, level: float) -> dict[str, Any] | None:
        """Metrics recomputed from saved predictions alone (None: use the saved metrics.json)."""
        return None

    def metric_schema(self) -> list[MetricSpec]:
        raise NotImplementedError

    summary_note: str = ""  # what the summary's score table means, printed above it

    def summary_columns(self) -> list[tuple[str, str]]:
        """(metric, column title) of summary.md's score table, in order."""
        return [(spec.name, spec.name) for spec in self.metric_schema()]

    # -- the experiment planner
    def leakage_keys(self, eval_fields: dict[str, Any]) -> list[str] | None:
        """Reply keys whose presence in a drift answer counts as the task format leaking (None: the default)."""
        return []

    def instruction_files(self, eval_fields: dict[str, Any]) -> dict[str, dict[str, str]]:
        """{options section: {field: path}} of the instruction files an eval step reads (hashed by content)."""
        return {}

    def valid_fields(self) -> dict[str, Any]:
        """EvalConfig fields of the loss-only evaluation of the validation rows."""
        return {}


def register_task(task: Task) -> Task:
    """Called by a plug-in module for each task it implements."""
    if task.name not in TASKS:
        raise ConfigError(f"task {task.name!r} is not declared in delia.task.TASKS")
    _LOADED[task.name] = task
    return task


def check_task(name: str, where: str = "task") -> str:
    """`name` when it is a known task; else ConfigError naming close matches (imports no plug-in)."""
    if name not in TASKS:
        close = difflib.get_close_matches(str(name), list(TASKS), n=3)
        hint = f"; did you mean {', '.join(map(repr, close))}?" if close else ""
        raise ConfigError(f"{where}: unknown task {name!r}{hint} (known: {', '.join(TASKS)})")
    return name


def get_task(name: str) -> Task:
    """The task named `name`, importing its plug-in module on first use."""
    check_task(name)
    if name not in _LOADED:
        importlib.import_module(TASKS.get(name))
    return _LOADED[name]

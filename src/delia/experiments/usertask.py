"""`TASK.yaml` for `delia run` (bring your own task): the config, the examples, what is inferred, the split.

A user task is a file of examples (input -> output), the instruction and the format description the user would
write. This module reads and checks them (errors name FILE:LINE: field: reason), normalises every row to
{"id", "input", "output"}, infers the task kind (json / label / text) and its options when they are not given
(the rules of the custom-task interface: required keys = keys of every gold object, allowed values for keys with
at most 10 distinct values, the label key when exactly one key has them), and splits rows and phrasings with a
seed. `delia.experiments.taskrun` turns the result into an ordinary experiment.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from delia.config import ConfigError, load_config, opt
from delia.data import DataError, Problem, read_records
from delia.diversify.stage import LLMConfig

MAX_VALUES = 10  # a key (json) or an output (label) with at most this many distinct gold values is categorical
BUILTIN_TASK = "builtin:"


@dataclass
class ParaphraseOptions:
    """How the instruction is paraphrased (each phrasing names the format only through the token)."""

    n: int = opt(24, help="phrasings to make (seen + unseen)")
    engine: Literal["grammar", "llm"] = opt("grammar", help="grammar: offline, deterministic; llm: an "
                                                            "OpenAI-compatible endpoint (see `llm`)")
    seed: int = opt(0, help="seed of the grammar order / the LLM requests")
    llm: LLMConfig = field(default_factory=LLMConfig, metadata={"help": "endpoint settings (engine llm)"})
    filters: dict[str, Any] = opt({}, help="other `delia diversify` fields, e.g. {max_similarity: 0.8}")

    def __post_init__(self) -> None:
        if self.n < 2:
            raise ConfigError(f"paraphrase.n: need at least 2 phrasings (seen and unseen), got {self.n}")


@dataclass
class HoldoutOptions:
    """What is held out: test rows (never trained on) and unseen phrasings (never in any training row)."""

    rows: float = opt(0.3, help="test rows: a fraction (< 1) or a count (>= 1) of the examples")
    phrasings: float = opt(0.25, help="unseen phrasings: a fraction (< 1) or a count (>= 1) of the phrasings")
    valid_rows: float = opt(0.25, help="validation rows, split off the training rows (model selection; never "
                                       "trained on): a fraction (< 1), a count (>= 1), or 0 for no validation")
    valid_phrasings: float = opt(0.25, help="validation phrasings, split off the seen ones (never trained on, "
                                            "not in the unseen test set): a fraction, a count, or 0")
    seed: int = opt(0, help="seed of the splits")

    def __post_init__(self) -> None:
        for name in ("rows", "phrasings", "valid_rows", "valid_phrasings"):
            v = getattr(self, name)
            if (v <= 0 and not (name.startswith("valid") and v == 0)) or (v >= 1 and v != int(v)):
                raise ConfigError(f"holdout.{name}: a fraction in (0, 1) or a whole count >= 1"
                                  f"{' (0: none)' if name.startswith('valid') else ''}, got {v}")
        if (self.valid_rows == 0) != (self.valid_phrasings == 0):
            raise ConfigError("holdout.valid_rows and holdout.valid_phrasings: set both to 0 (no validation) or "
                              "neither")

    @property
    def validates(self) -> bool:
        return self.valid_rows > 0


@dataclass
class UserTask:
    """A user's task: examples + instruction + format description -> base vs plain tuning vs CIT vs DELIA."""

    name: str = opt(help="task name (the default output directory is runs/tasks/NAME)")
    examples: str = opt(help="examples file: {input, output} rows, chat rows, prompt/completion or Alpaca rows; "
                             "a path (relative to this YAML), builtin:NAME or an HF dataset id")
    instruction: str | None = opt(None, help="the task instruction as a user writes it (without the format)")
    format: str | None = opt(None, help="the format description, e.g. 'Reply with a JSON object with the key "
                                        "\"language\"'; DELIA replaces it by the token")
    paraphrases: str | None = opt(None, help="a file of existing phrasings (one per line, each with the token) "
                                             "instead of generating them")
    task: Literal["auto", "json", "label", "text"] = opt("auto", help="auto: json when every output is a JSON "
                                                                      "object, label when few distinct outputs, "
                                                                      "else text")
    keys: list[str] | None = opt(None, help="json: required keys (default: inferred)")
    values: dict[str, list[str]] | None = opt(None, help="json: allowed values per key (default: inferred)")
    label_key: str | None = opt(None, help="json: the key holding the label (default: inferred)")
    labels: list[str] | None = opt(None, help="label: the label set (default: inferred)")
    metrics: list[str] | None = opt(None, help="text: metrics (default: exact, chrf, bleu)")
    template: str = opt("{context}\n\n{instruction}", help="the user turn: {context} = the input, {instruction} "
                                                           "= the phrasing")
    token: str = opt("<sep>", help="the special token that stands for the format")
    paraphrase: ParaphraseOptions = field(default_factory=ParaphraseOptions, metadata={"help": "paraphrasing"})
    holdout: HoldoutOptions = field(default_factory=HoldoutOptions, metadata={"help": "held-out rows/phrasings"})
    methods: list[str] | None = opt(None, help="default: original, plain (your instruction + format as written, "
                                               "one phrasing), cit (paraphrases + token), delia (+ diverse data)")
    ratio: float = opt(1.0, help="self-sampled diverse rows per training row (delia)")
    seeds: list[int] = opt([42], help="training seeds")
    model: str = opt("smollm2-135m-instruct", help="base model")
    threads: int | None = opt(None, help="torch CPU threads")
    out: str | None = opt(None, help="output directory (default runs/tasks/NAME)")
    sample: dict[str, Any] = opt({}, help="SampleConfig overrides (self-sampling)")
    train: dict[str, Any] = opt({}, help="TrainConfig overrides")
    eval: dict[str, Any] = opt({}, help="EvalConfig overrides, e.g. {generation: {max_new_tokens: 32}, custom: "
                                        "{instructions: 'seen:1,unseen:all'}}")
    experiment: dict[str, Any] = opt({}, help="other ExperimentConfig fields (e.g. cost, sample_margin, build)")

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"name: use letters, digits, '-' and '_', got {self.name!r}")
        if self.paraphrases is None and not (self.instruction and self.format):
            raise ConfigError("give `instruction` and `format` (delia paraphrases them), or `paraphrases` (a file "
                              "of phrasings that contain the token)")
        if self.format is not None and self.instruction and self.format.strip() in self.instruction:
            raise ConfigError("instruction: leave the format description out of it (it goes in `format`)")
        if self.ratio < 0:
            raise ConfigError(f"ratio must be >= 0, got {self.ratio}")
        if not self.seeds:
            raise ConfigError("seeds: give at least one seed")
        if not self.token or self.token != self.token.strip():
            raise ConfigError(f"token must be non-empty without surrounding spaces, got {self.token!r}")
        if "plain" in (self.methods or []) and not (self.instruction and self.format):
            raise ConfigError("methods: 'plain' trains on your instruction + format as written: give both")

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/tasks/{self.name}"

    @property
    def method_list(self) -> list[str]:
        if self.methods is not None:
            return list(self.methods)
        return ["original", *(["plain"] if self.instruction and self.format else []), "cit", "delia"]

    @property
    def plain_instruction(self) -> str | None:
        """What a user writes without delia: the instruction followed by the format description."""
        return f"{self.instruction.strip()} {self.format.strip()}" if self.instruction and self.format else None


def task_file(spec: str | Path) -> Path:
    """The YAML of a task: a path, or `builtin:NAME` for a packaged task (src/delia/resources/tasks/NAME.yaml)."""
    text = str(spec)
    if text.startswith(BUILTIN_TASK):
        name = text[len(BUILTIN_TASK):].removesuffix(".yaml")
        res = resources.files("delia") / "resources" / "tasks" / f"{name}.yaml"
        if not res.is_file():
            raise FileNotFoundError(f"{text}: no packaged task of that name (known: "
                                    f"{', '.join(BUILTIN_TASK + n for n in builtin_tasks())})")
        return Path(str(res))
    return Path(text)


def builtin_tasks() -> list[str]:
    root = resources.files("delia") / "resources" / "tasks"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml")) if root.is_dir() else []


def load_task(spec: str | Path, overrides: list[str] | None = None) -> UserTask:
    """The UserTask from a YAML file (or `builtin:NAME`) + `key.sub=value` overrides. Relative file paths in it
    are relative to the YAML's folder (when the file exists there), so a task folder can move as a whole."""
    path = task_file(spec)
    task = load_config(UserTask, path, overrides)
    for name in ("examples", "paraphrases"):
        value = getattr(task, name)
        if value and not Path(value).is_absolute() and ":" not in value and (path.parent / value).exists():
            setattr(task, name, str(path.parent / value))
    return task


# ---- examples


@dataclass
class Example:
    """One normalised example, with where it came from (for error messages)."""

    id: str
    input: str
    output: str
    source: str
    line: int


def read_examples(spec: str) -> list[Example]:
    """Every row of `spec` as an Example: {"input", "output"} rows, or any delia format with one user turn
    (Alpaca: `input`, else `instruction`) and a reply.

    Raises:
        DataError: every row that cannot be used, as FILE:LINE: field: reason.
    """
    from delia.data.io import iter_json_rows

    first = next(((ln, o) for ln, o, err in iter_json_rows(spec) if not err), None)
    if first is not None and isinstance(first[1], dict) and {"input", "output"} <= set(first[1]) \
            and "instruction" not in first[1]:
        return _read_io_rows(spec)
    out, problems = [], []
    for r in read_records(spec):
        users = [m for m in r.prompt_messages if m["role"] == "user"]
        if len(users) != 1:
            problems.append(Problem(spec, r.line or 0, "one user turn per row (multi-turn chats are not "
                                                       "supported for a task)", "messages"))
            continue
        text = r.fields.get("input") or users[0]["content"] if r.fmt == "alpaca" else users[0]["content"]
        if not (r.response or "").strip():
            problems.append(Problem(spec, r.line or 0, "no reply (the gold output)", "output"))
            continue
        out.append(Example(r.id, text, r.response, spec, r.line or 0))
    if problems:
        raise DataError(problems)
    return _check_unique(out, spec)


def _read_io_rows(spec: str) -> list[Example]:
    from delia.data.io import iter_json_rows

    out, problems = [], []
    for line, obj, err in iter_json_rows(spec):
        if err:
            problems.append(Problem(spec, line, err))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(spec, line, "expected a JSON object with input and output"))
            continue
        bad = [k for k in ("input", "output") if not isinstance(obj.get(k), str) or not obj[k].strip()]
        for k in bad:
            problems.append(Problem(spec, line, "missing" if k not in obj else "expected a non-empty string", k))
        rid = obj.get("id", f"{Path(spec).stem}:{line}")
        if not isinstance(rid, (str, int)):
            problems.append(Problem(spec, line, "expected a string or integer", "id"))
        if not bad and isinstance(rid, (str, int)):
            out.append(Example(str(rid), obj["input"], obj["output"], spec, line))
    if problems:
        raise DataError(problems)
    if not out:
        raise DataError([Problem(spec, 1, "file holds no rows")])
    return _check_unique(out, spec)


def _check_unique(rows: list[Example], spec: str) -> list[Example]:
    """Ids must be unique and an input must not appear twice (it could land on both sides of the split)."""
    problems, ids, inputs = [], {}, {}
    for e in rows:
        if e.id in ids:
            problems.append(Problem(spec, e.line, f"duplicate id {e.id!r} (first on line {ids[e.id]})", "id"))
        if e.input in inputs:
            problems.append(Problem(spec, e.line, f"the same input as line {inputs[e.input]} (it could be "
                                                  f"trained on and tested on)", "input"))
        ids.setdefault(e.id, e.line)
        inputs.setdefault(e.input, e.line)
    if problems:
        raise DataError(problems)
    return rows


# ---- what the task is


def _as_object(text: str) -> dict[str, Any] | None:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        return None
    return obj if isinstance(obj, dict) else None


def infer(task: UserTask, rows: list[Example]) -> dict[str, Any]:
    """The task kind and its options (the given ones, the rest inferred from the gold outputs).

    Returns:
        {"task": json|label|text, plus "keys"/"values"/"label_key" (json), "labels" (label), "metrics" (text)}.
    Raises:
        DataError: a gold output that does not fit the given or inferred options (FILE:LINE: output: reason).
    """
    objects = [_as_object(e.output) for e in rows]
    kind = task.task
    if kind == "auto":
        distinct = Counter(e.output.strip() for e in rows)
        kind = "json" if all(o is not None for o in objects) else \
            "label" if len(distinct) <= MAX_VALUES and min(distinct.values()) >= 2 else "text"
    if kind == "json":
        bad = [Problem(e.source, e.line, "not a JSON object (the task is json)", "output")
               for e, o in zip(rows, objects) if o is None]
        if bad:
            raise DataError(bad)
        keys = task.keys or [k for k in objects[0] if all(k in o for o in objects)]
        if not keys:
            raise ConfigError("keys: no key is present in every gold output; give `keys`")
        values = task.values
        if values is None:
            scalar = (str, int, float, bool)
            seen = {k: Counter(str(o[k]) for o in objects if isinstance(o.get(k), scalar)) for k in keys}
            # a free-text key also has few distinct values on few rows: only repeated values make a set
            values = {k: sorted(c) for k, c in seen.items()
                      if sum(c.values()) == len(objects) and len(c) <= MAX_VALUES and len(c) < len(objects)}
        label_key = task.label_key or (next(iter(values)) if len(values) == 1 else None)
        if label_key is not None and label_key not in values:
            raise ConfigError(f"label_key {label_key!r} has no allowed-value set; give `values` for it")
        bad = [Problem(e.source, e.line, f"{k}: {o.get(k)!r} is not one of {values[k]}" if k in o else
                       f"missing key {k!r}", "output") for e, o in zip(rows, objects)
               for k in keys if k not in o or (k in values and str(o[k]) not in values[k])]
        if bad:
            raise DataError(bad)
        return {"task": "json", "keys": keys, "values": values, "label_key": label_key}
    if kind == "label":
        labels = task.labels or sorted({e.output.strip() for e in rows})
        bad = [Problem(e.source, e.line, f"{e.output.strip()!r} is not one of the labels {labels}", "output")
               for e in rows if e.output.strip() not in labels]
        if bad:
            raise DataError(bad)
        return {"task": "label", "labels": labels}
    return {"task": "text", "metrics": task.metrics or ["exact", "chrf", "bleu"]}


def label_of(info: dict[str, Any], e: Example) -> str | None:
    """The gold label of a row (label task; json with a label key), for a stratified split."""
    if info["task"] == "label":
        return e.output.strip()
    if info["task"] == "json" and info.get("label_key"):
        return str(json.loads(e.output)[info["label_key"]])
    return None


# ---- splits


def count(spec: float, n: int, what: str, least: int = 1) -> int:
    """How many of `n` items `spec` holds out (a fraction, rounded, or a count); at least `least` on each side."""
    k = round(spec * n) if spec < 1 else int(spec)
    if spec < 1 and least > 1:  # a fraction of a small set still holds out the minimum
        k = max(k, least)
    if not least <= k <= n - least:
        few = "none" if least == 1 else f"fewer than {least}"
        side = f"holds out {few}" if k < least else f"leaves {few} to train on"
        raise ConfigError(f"holdout.{what}: {spec:g} of {n} {side}; both sides need at least {least}"
                          + (f" (give at least {2 * least} rows, or holdout.valid_rows=0 and "
                             f"holdout.valid_phrasings=0 to train without validation)" if what.startswith("valid")
                             else ""))
    return k


def split_rows(rows: list[Example], n_test: int, seed: int, labels: list[str | None]) -> tuple[list[int], list[int]]:
    """(train indices, test indices), seeded; stratified by label when rows have one (each label's share of the
    test set follows its share of the data, largest remainders first), so a small test set keeps every class."""
    rng = random.Random(seed)
    by: dict[str | None, list[int]] = {}
    for i, lab in enumerate(labels):
        by.setdefault(lab, []).append(i)
    for idx in by.values():
        rng.shuffle(idx)
    exact = {lab: n_test * len(idx) / len(rows) for lab, idx in by.items()}
    quota = {lab: int(x) for lab, x in exact.items()}
    for lab in sorted(exact, key=lambda k: (-(exact[k] - quota[k]), str(k)))[:n_test - sum(quota.values())]:
        quota[lab] += 1
    test = sorted(i for lab, idx in by.items() for i in idx[:quota[lab]])
    held = set(test)
    return [i for i in range(len(rows)) if i not in held], test


def split_phrasings(phrasings: list[str], n_unseen: int, seed: int) -> tuple[list[str], list[str]]:
    """(seen, unseen): a seeded shuffle; the unseen ones are never put in a training row."""
    order = list(range(len(phrasings)))
    random.Random(seed).shuffle(order)
    unseen = set(order[:n_unseen])
    return ([p for i, p in enumerate(phrasings) if i not in unseen],
            [p for i, p in enumerate(phrasings) if i in unseen])

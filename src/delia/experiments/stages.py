"""Adapters from experiment steps to the stage functions: the one place that knows each stage's API.

Every step kind has (a) the config dataclass it resolves to, (b) which config fields hold the paths of its
inputs and output, and (c) a `run_*` call. `resolve` fills a step's config with defaults (so the hash names
what will really run) and replaces input paths by placeholders (so moving an experiment directory keeps its
hashes). Heavy stage modules are imported only when a step runs.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delia.config import ConfigError, from_dict, merge, to_dict
from delia.registry import registry

log = logging.getLogger(__name__)

# Method-specific data steps (fact-based QA, DMT's stage-2 mixture, ...): fn(inputs, out_dir, **params) -> dict.
TRANSFORMS = registry("transform")


@dataclass(frozen=True)
class StageSpec:
    """How one step kind maps onto its stage."""

    cls: Callable[[], type] | None  # the stage's config dataclass (lazy import); None for experiment-local steps
    paths: dict[str, str]  # config field -> "role/file" ("" = this step's own directory, "@out/file" = own file)
    volatile: tuple[str, ...] = ()  # fields that do not change what is produced (threads, logging, limit...)


def _sample_cls():
    from delia.sampling import SampleConfig
    return SampleConfig


def _build_cls():
    from delia.mixing import BuildConfig
    return BuildConfig


def _train_cls():
    from delia.training import TrainConfig
    return TrainConfig


def _eval_cls():
    from delia.evaluation import EvalConfig
    return EvalConfig


def _drift_cls():
    from delia.evaluation.drift import DriftConfig
    return DriftConfig


# drift steps: the query file is named by content (fingerprint), like the other data steps
_DRIFT_VOLATILE = ("threads", "batch_size", "score_batch_size", "data")


# the validation prompts' files: named by content (the train step's fingerprint), not by path
VALIDATION_FILES = ("validation.eval.data", "validation.eval.custom.seen_file", "validation.eval.custom.unseen_file")



def validation_digests(train: dict[str, Any], digest) -> dict[str, Any]:
    """The content digests (`digest(path)`) of a training step's validation files, which are not hashed by path;
    {} for a step without validation (its key stays as it was)."""
    def value(dotted: str) -> Any:
        node: Any = train
        for part in dotted.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        return node

    found = {d: digest(value(d)) for d in VALIDATION_FILES if isinstance(value(d), str) and value(d)}
    return {"validation": found} if found else {}


SPECS: dict[str, StageSpec] = {
    "sample": StageSpec(_sample_cls, {"out": "@out/cache.jsonl"},
                        volatile=("limit", "engine_options", "queries")),
    # data paths are passed, not hashed: these steps are named by their input files' content (fingerprint)
    "subset": StageSpec(None, {}, volatile=("path",)),
    # need / exclude_truncated / sample drive the top-up of a short slice: not what a slice is named by
    "slice": StageSpec(None, {}, volatile=("queries", "need", "exclude_truncated", "sample")),
    "build": StageSpec(_build_cls, {"downstream": "downstream/data.jsonl", "diverse": "diverse/cache.jsonl",
                                    "out": "@out"}),
    "transform": StageSpec(None, {}),
    "train": StageSpec(_train_cls, {"data": "data/train.jsonl", "init_adapter": "init", "out": "@out"},
                       volatile=("threads", "report_to", "logging_steps", "save_steps", "save_total_limit",
                                 "resume", "micro_batch_size", *VALIDATION_FILES, "validation.batch_size")),
    "eval": StageSpec(_eval_cls, {"adapter": "adapter", "data": "examples/data.jsonl",
                                  "halu.seen_file": "seen/data.jsonl", "out": "@out"},
                      volatile=("threads", "resume", "generation.batch_size", "analysis.score_batch_size",
                                "data", "halu.unseen_file", "halu.explicit_file", "halu.heldout_file")),
    "drift_answers": StageSpec(_drift_cls, {"out": "@out"}, volatile=_DRIFT_VOLATILE),
    "drift": StageSpec(_drift_cls, {"adapter": "adapter", "answers": "answers/answers.jsonl", "out": "@out"},
                       volatile=_DRIFT_VOLATILE),
}


from delia.mixing.manifest import sha256_file  # noqa: E402, F401  (re-exported for plan.py: one content hash)


def _paths(kind: str, inputs: dict[str, Path], out: Path | None) -> dict[str, Any]:
    """Field -> path for the inputs present (or placeholders `<role>/file` when `out` is None), nested for
    dotted fields (`halu.seen_file` -> {"halu": {"seen_file": ...}})."""
    values: dict[str, Any] = {}
    for field, spec in SPECS[kind].paths.items():
        role, _, name = spec.partition("/")
        if role == "@out":
            value = str(out / name if name else out) if out else f"<out>/{name}"
        elif role in inputs:
            value = str(Path(inputs[role]) / name if name else inputs[role])
        else:
            continue
        *parents, leaf = field.split(".")
        node = values
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return values


def _drop(d: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    d = json.loads(json.dumps(d, default=str))
    for key in dotted:
        node, parts = d, key.split(".")
        for p in parts[:-1]:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):  # a parent that is unset (None) or absent has nothing to drop
            node.pop(parts[-1], None)
    return d


def resolve(kind: str, config: dict[str, Any], roles: list[str]) -> dict[str, Any]:
    """The step's full config with defaults filled, validated by the stage's dataclass, volatile fields removed.

    Args:
        kind: step kind (a key of SPECS).
        config: the fields the method set (no input/output paths).
        roles: names of the step's inputs (their paths become placeholders).
    Returns:
        A plain dict to hash. Raises ConfigError when the stage rejects the config.
    """
    spec = SPECS[kind]
    if spec.cls is None:
        return _drop(config, spec.volatile)
    cls = spec.cls()
    values = merge(config, _paths(kind, {r: Path(f"<{r}>") for r in roles}, None))
    try:
        resolved = to_dict(from_dict(cls, values, where=kind))
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"{kind} step: {e}") from None
    # inputs are already placeholders (`<role>/file`); the output directory is named by this very hash
    out_fields = tuple(f for f, p in spec.paths.items() if p.startswith("@out"))
    return _drop_none(_drop(resolved, spec.volatile + out_fields))


def _drop_none(d: Any) -> Any:
    """Unset (None) fields leave the hash, so a stage that gains an optional field keeps its cached outputs."""
    if isinstance(d, dict):
        return {k: _drop_none(v) for k, v in d.items() if v is not None}
    return d


# ---------------------------------------------------------------- running one step


def run_step(kind: str, config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Run one step into `out`; returns a small summary for done.json."""
    return RUNNERS[kind](config, inputs, out)


def _stage_config(kind: str, config: dict[str, Any], inputs: dict[str, Path], out: Path):
    return from_dict(SPECS[kind].cls(), merge(config, _paths(kind, inputs, out)), where=kind)


def _run_sample(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.sampling import run_sample

    summary = run_sample(_stage_config("sample", config, inputs, out))
    if summary.failed:
        raise RuntimeError(f"sample: {summary.failed} queries failed ({list(summary.failures.items())[:3]}); "
                           f"rerun the experiment to retry them")
    return summary.to_dict()


def _run_subset(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """Rows start..start+n of a data file, byte for byte (the paper's data-size axis; held-out test rows)."""
    from delia.data import read_records
    from delia.data.sources import resolve_source

    src, n, start = resolve_source(config["path"]), int(config["n"]), int(config.get("start", 0))
    # rows end at "\n" only: str.splitlines would also cut a row at a U+2028 inside one of its strings
    lines = [ln + "\n" for ln in src.read_text(encoding="utf-8").removesuffix("\n").split("\n") if ln.strip()]
    if start + n > len(lines):
        raise ConfigError(f"{src}: rows {start}..{start + n} asked for, but the file has {len(lines)} rows")
    (out / "data.jsonl").write_text("".join(lines[start:start + n]), encoding="utf-8")
    read_records(out / "data.jsonl")  # validates; raises DataError naming the line
    return {"rows": n}


TOP_UP_LIMIT = 4  # a slice samples at most this many times the queries planned for it


def _run_slice(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    """The cache rows answering the first `n_queries` queries, in query order.

    Builds read a slice, not the whole cache, so growing the shared cache for a larger ratio elsewhere in
    the grid leaves every existing build (and the trainings after it) valid. When the build's exclusions (empty
    answers, answers cut at the sampling budget) leave fewer than `need` usable rows, the slice samples more
    queries into the shared cache and keeps the shortest prefix that holds `need` usable rows (a top-up);
    a slice with enough rows is exactly the first `n_queries` answers, as before.
    """
    from delia.sampling import load_queries

    cache = inputs["cache"] / "cache.jsonl"
    ids = [q.id for q in load_queries(config["queries"])]
    rule = bool(config.get("exclude_truncated", True))
    n = min(int(config["n_queries"]), len(ids))
    rows, reason = _read_answers(cache, set(ids), rule)
    missing = sum(i not in rows for i in ids[:n])
    if missing:
        raise RuntimeError(f"{cache} lacks answers to {missing} of the first {n} queries; rerun the "
                           f"experiment to sample them")
    need = config.get("need")
    m = n
    cap = min(len(ids), TOP_UP_LIMIT * n)  # past that, the budget (not the margin) is what is wrong
    while need is not None and _usable(ids[:m], rows, reason)[-1] < need:
        have = _usable(ids[:m], rows, reason)[-1]
        if m >= cap or "sample" not in config:
            excl = Counter(reason[i] for i in ids[:m] if reason.get(i))
            raise RuntimeError(
                f"{cache}: the answers to the first {m} queries of {config['queries']} hold {have} usable rows "
                f"({', '.join(f'{c} {r}' for r, c in excl.items()) or 'none excluded'}), but a build needs "
                f"{need} (a top-up samples at most {TOP_UP_LIMIT}x the {n} planned queries); raise "
                f"`sample_margin`, use a larger queries file, raise sample.max_new_tokens (fewer answers cut) or "
                f"set build.exclude_truncated: false")
        # grow by the usable rate seen so far, with 10% to spare, so one or two rounds suffice
        m = min(cap, m + math.ceil((need - have) * m / max(have, 1) * 1.1) + 2)
        if any(i not in rows for i in ids[:m]):
            log.warning("slice: %d usable rows among the first %d answers, %d needed: sampling up to %d queries "
                        "(a larger sample_margin avoids this top-up)", have, n, need, m)
            RUNNERS["sample"]({**config["sample"], "limit": m}, {}, inputs["cache"])
            rows, reason = _read_answers(cache, set(ids), rule)
            if any(i not in rows for i in ids[:m]):
                raise RuntimeError(f"{cache}: the top-up to {m} queries left some unanswered; rerun the experiment")
    if m > n:  # the shortest prefix with `need` usable rows: the same output however the cache was grown
        counts = _usable(ids[:m], rows, reason)
        n = next(k for k in range(n, m + 1) if counts[k] >= need)
    (out / "cache.jsonl").write_text("".join(rows[q] for q in ids[:n]), encoding="utf-8")
    summary: dict[str, Any] = {"rows": n, "usable": _usable(ids[:n], rows, reason)[-1]}
    if n > int(config["n_queries"]):  # what the top-up depended on (runner.step_done redoes it when that changes)
        summary.update(topped_up=n - int(config["n_queries"]), need=need, exclude_truncated=rule)
    return summary


def _read_answers(cache: Path, wanted: set[str], exclude_truncated: bool) -> tuple[dict[str, str], dict[str, str]]:
    """(id -> its cache line, id -> why the build excludes it) for the wanted ids, first answer of each."""
    from delia.mixing.cache import exclusion_reason

    rows: dict[str, str] = {}
    reason: dict[str, str] = {}
    with open(cache, encoding="utf-8") as f:
        for line in f:
            if not line.strip():
                continue
            row = json.loads(line)
            qid = row.get("id")
            if qid not in wanted or qid in rows:
                continue
            rows[qid] = line if line.endswith("\n") else line + "\n"
            try:
                meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
                why = exclusion_reason(row["messages"][-1]["content"], meta, exclude_truncated)
            except (KeyError, IndexError, TypeError, AttributeError):
                why = None  # malformed: the build reports it with its line
            if why:
                reason[qid] = why
    return rows, reason


def _usable(ids: list[str], rows: dict[str, str], reason: dict[str, str]) -> list[int]:
    """Prefix counts: element k is the number of usable answers among ids[:k] (k = 0..len(ids))."""
    counts = [0]
    for i in ids:
        counts.append(counts[-1] + (i in rows and i not in reason))
    return counts


def _run_build(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.mixing import build

    manifest = build(_stage_config("build", config, inputs, out))
    return {"counts": manifest["counts"], "warnings": manifest["warnings"]}


def _run_transform(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    params = {k: v for k, v in config.items() if k != "name"}
    return TRANSFORMS.get(config["name"])(inputs, out, **params)


def _run_train(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.training import run_train

    result = run_train(_stage_config("train", config, inputs, out))  # an `init` input continues that adapter
    return {"global_step": result.global_step, "train_loss": result.train_loss}


def _run_eval(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.evaluation import run_eval

    metrics = run_eval(_stage_config("eval", config, inputs, out))
    return {"speed": metrics.get("speed")}


def _run_drift_answers(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.evaluation.drift import run_drift_answers

    m = run_drift_answers(_stage_config("drift_answers", config, inputs, out))
    return {"n": m["n"], "nll": m["nll"]}


def _run_drift(config: dict[str, Any], inputs: dict[str, Path], out: Path) -> dict[str, Any]:
    from delia.evaluation.drift import run_drift

    m = run_drift(_stage_config("drift", config, inputs, out))
    return {k: m[k] for k in ("drift_n", "drift_nll", "drift_nll_base", "leak_rate")}


RUNNERS: dict[str, Callable[[dict[str, Any], dict[str, Path], Path], dict[str, Any]]] = {
    "sample": _run_sample, "subset": _run_subset, "slice": _run_slice, "build": _run_build,
    "transform": _run_transform, "train": _run_train, "eval": _run_eval,
    "drift_answers": _run_drift_answers, "drift": _run_drift,
}

"""Grid expansion: methods x sizes x ratios x seeds -> runs -> a deduplicated graph of hashed stage steps.

A method is a recipe (see `delia.methods`) that calls the `Ctx` helpers below; each helper returns a `Step`
whose key is a hash of its kind, resolved config and its inputs' keys. Identical steps (the base model's
evaluation shared by every grid cell, CIT and "w/o extensive diverse data") therefore collapse into one, and
a method varies only along the grid axes its recipe actually reads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delia.config import ConfigError, config_hash, from_dict, merge, to_dict
from delia.experiments.config import ExperimentConfig, split_method
from delia.experiments.stages import resolve, sha256_file, validation_digests
from delia.mixing.schedule import diverse_count
from delia.task import get_task


@dataclass
class Step:
    """One unit of cached work. `dir` is `steps/<kind>/<key>` under the experiment directory."""

    kind: str
    config: dict[str, Any]
    inputs: dict[str, Step] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # hashed, not passed (input file digests)
    volatile: dict[str, Any] = field(default_factory=dict)  # passed, not hashed (e.g. the sample limit)

    def __post_init__(self) -> None:
        self.resolved = resolve(self.kind, self.run_config, list(self.inputs))
        self.key = config_hash({"kind": self.kind, "config": self.resolved, "fingerprint": self.fingerprint,
                                "inputs": {r: s.key for r, s in sorted(self.inputs.items())}})

    @property
    def run_config(self) -> dict[str, Any]:
        """What the stage receives: the hashed config with the volatile fields merged in (nested)."""
        return merge(self.config, self.volatile)

    def dir(self, root: str | Path) -> Path:
        return Path(root) / "steps" / self.kind / self.key


@dataclass
class Run:
    """One grid cell of one method: the axes its recipe used and its named steps (test/valid eval, train)."""

    method: str
    axes: dict[str, Any]
    steps: dict[str, Step]
    options: dict[str, Any] = field(default_factory=dict)  # the method's checked options (for config.yaml)

    @property
    def id(self) -> str:
        tail = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(self.axes.items()))
        return f"{self.method}/{tail or 'base'}"


class Ctx:
    """What a recipe sees: the grid point (reading an axis records that the method varies along it), the
    method's typed options, and helpers that create the stage steps.

    `method` may name a training recipe (`delia@paper`): every training step then applies that entry of the
    experiment's `recipes:` on top of `train:`; plain names train with `train:` alone (and keep their hashes).
    """

    def __init__(self, exp: ExperimentConfig, method: str, size: int, ratio: float, seed: int,
                 pool: dict[str, Step], options: Any = None) -> None:
        self.exp, self.method, self._pool = exp, method, pool
        self.base, self.recipe = split_method(method)
        self.options = options  # the method's options dataclass (delia.methods.options)
        self._axes = {"size": size, "ratio": ratio, "seed": seed}
        self.used: set[str] = set()

    # -- grid axes (recorded when read)
    def _axis(self, name: str) -> Any:
        self.used.add(name)
        return self._axes[name]

    @property
    def size(self) -> int:
        return self._axis("size")

    @property
    def ratio(self) -> float:
        return self._axis("ratio")

    @property
    def seed(self) -> int:
        return self._axis("seed")

    def train_fields(self) -> dict[str, Any]:
        """The experiment's `train:` fields with this method's training recipe (if any) on top."""
        if self.recipe is None:
            return dict(self.exp.train)
        return merge(self.exp.train, self.exp.recipes[self.recipe])

    def train_config(self):
        """The resolved TrainConfig a training step of this method starts from (defaults filled in)."""
        from delia.training.config import TrainConfig

        return from_dict(TrainConfig, {**self.train_fields(), "model": self.exp.model, "seed": self.seed},
                         where=f"recipes.{self.recipe}" if self.recipe else "train")

    # -- steps
    def step(self, kind: str, config: dict[str, Any], inputs: dict[str, Step] | None = None,
             fingerprint: dict[str, Any] | None = None, volatile: dict[str, Any] | None = None) -> Step:
        """Create a step, or return the identical one already planned."""
        s = Step(kind, config, inputs or {}, fingerprint or {}, volatile or {})
        return self._pool.setdefault(s.key, s)

    def _threads(self) -> dict[str, int]:
        return {"threads": self.exp.threads} if self.exp.threads else {}

    def downstream(self) -> Step:
        """The first `size` rows of the training file."""
        path = self.exp.data.train
        if self.size > _rows(path):
            raise ConfigError(f"grid.sizes: size {self.size} (method {self.method}) asks for more rows than "
                              f"{path} has ({_rows(path)})")
        rows = self.subset(path, self.size)
        transform = get_task(self.exp.data.task).train_transform  # e.g. src/ref rows -> chat rows
        return self.transform(transform, {"data": rows}) if transform else rows

    def subset(self, path: str, n: int, start: int = 0) -> Step:
        """Rows start..start+n of a data file. Named by content, not path: moving or renaming the file (e.g. a
        `builtin:` name for a copy of the same data) keeps the step and everything after it."""
        cfg: dict[str, Any] = {"n": n, **({"start": start} if start else {})}
        return self.step("subset", cfg, fingerprint={"sha256": _digest(path)}, volatile={"path": path})

    def diverse(self, n_rows: int) -> Step:
        """Self-sampled answers to the first queries, enough for `n_rows` usable rows.

        `sample_margin` extra queries are sampled up front; when the build's exclusions (empty answers, answers
        cut at the sampling budget) still leave fewer than `n_rows` usable rows, the slice samples more queries
        itself (a top-up) and keeps the shortest prefix that has enough. Neither the need nor the top-up is part
        of the slice's hash: a slice that had enough rows keeps its key and its output.
        """
        from delia.mixing.config import BuildConfig

        path = self.exp.data.queries
        volatile: dict[str, Any] = {"limit": 1, "queries": path}
        if self.exp.threads:
            volatile["engine_options"] = {**self.exp.sample.get("engine_options", {}), "threads": self.exp.threads}
        sample = self.step("sample", {**self.exp.sample, "model": self.exp.model},
                           fingerprint={"sha256": _digest(path)}, volatile=volatile)
        n_queries = n_rows + math.ceil(n_rows * self.exp.sample_margin) + 2
        build = from_dict(BuildConfig, {**self.exp.build, "downstream": "-", "out": "-"}, where="build")
        # With allow_repeat a short slice builds (with repeats): topping it up would change a valid output.
        top_up = {} if build.allow_repeat else {"need": n_rows, "exclude_truncated": build.exclude_truncated,
                                                  "sample": sample.run_config}
        return self.step("slice", {"n_queries": n_queries}, {"cache": sample},
                         fingerprint={"sha256": _digest(path)}, volatile={"queries": path, **top_up})

    def build(self, ratio: float, seed: int | None = None, **fields: Any) -> Step:
        """A training set: the downstream rows (instructions per `fields`) plus ratio x size diverse rows."""
        down = self.downstream()
        inputs = {"downstream": down}
        if ratio > 0:
            inputs["diverse"] = self.diverse(diverse_count(ratio, self.size)[0])  # the builder's own count
        token = dict(get_task(self.exp.data.task).build_fields)  # e.g. translation: no special token
        fixed = "fixed_instruction" in fields  # a fixed instruction replaces any variants file
        shared = {k: v for k, v in self.exp.build.items() if not (fixed and k == "instructions")}
        cfg = {**token, **shared, "model": self.exp.model, "ratio": ratio,
               "seed": self.seed if seed is None else seed, **fields}
        return self.step("build", cfg, inputs)

    def transform(self, name: str, inputs: dict[str, Step], **params: Any) -> Step:
        """A method-specific data step (a registered `delia.experiments.stages.TRANSFORMS` function)."""
        return self.step("transform", {"name": name, **params}, inputs)

    def train(self, data: Step, init: Step | None = None, **fields: Any) -> Step:
        """LoRA SFT on `data` (a build or transform step); `init` continues an earlier run's adapter."""
        cfg = merge({**self.train_fields(), "model": self.exp.model, "seed": self.seed, **self._threads()}, fields)
        return self.step("train", cfg, {"data": data, **({"init": init} if init else {})},
                         fingerprint=validation_digests(cfg, _digest))

    def evaluate(self, adapter: Step | None = None, seen: Step | None = None, **fields: Any) -> dict[str, Step]:
        """The test evaluation (generation) and, when the task has gold replies, the loss evaluation.

        Args:
            adapter: the training step to evaluate (None: the base model).
            seen: a step whose data.jsonl holds the rows whose instructions are this run's "seen" phrasings
                (halu); default: the training rows of the smallest size, shared by every method.
            fields: EvalConfig fields on top of the experiment's `eval:`.
        """
        d, task = self.exp.data, get_task(self.exp.data.task)
        inputs = {"adapter": adapter} if adapter else {}
        base = {"task": d.task, "model": self.exp.model, **self._threads()}
        test = merge(merge(base, self.exp.eval), fields)
        files = _instruction_files(test)  # named by content (fingerprint), not by path
        if task.supports("seen_from_training") and seen is not None:
            test_inputs = {**inputs, "seen": seen}
        elif task.supports("seen_from_training") and "seen_file" not in self.exp.eval.get("halu", {}):
            # "seen" phrasings = those of the smallest training size, so they were seen by every trained model
            # (at any size) and every method is scored on the same prompts
            sizes = [*self.exp.grid.sizes, *(n for o in self.exp.methods.values() for n in o.get("sizes") or [])]
            test_inputs = {**inputs, "seen": self.subset(d.train, min(sizes))}
        else:
            test_inputs = dict(inputs)
        if d.test_rows:  # held-out rows of the test file, as a step of their own (so they are hashed by content)
            start, stop = d.test_rows
            if stop > _rows(d.test):
                raise ConfigError(f"data.test_rows: [{start}, {stop}) reaches past the {_rows(d.test)} rows of "
                                  f"{d.test}")
            rows = self.subset(d.test, stop - start, start)
            # `data` is passed only for the dry-run's row count; the `examples` input replaces it at run time
            out = {"test": self.step("eval", test, {**test_inputs, "examples": rows}, fingerprint=files["digests"],
                                     volatile={"data": d.test, **files["paths"]})}
        else:
            out = {"test": self.step("eval", test, test_inputs,
                                     fingerprint={"sha256": _digest(d.test), **files["digests"]},
                                     volatile={"data": d.test, **files["paths"]})}
        if d.valid:
            # Only teacher-forced scores are read from this evaluation, so it generates a single token.
            valid = merge(merge({**base, "generation": {"max_new_tokens": 1},
                                 "analysis": {"score": "on", "hidden": False}, "bootstrap": 0,
                                 **task.valid_fields(self.exp.eval)}, self.exp.valid_eval), fields)
            out["valid"] = self.step("eval", valid, inputs, fingerprint={"sha256": _digest(d.valid)},
                                     volatile={"data": d.valid})
        if adapter:
            out["train"] = adapter
        if self.exp.drift is not None:
            out["drift"] = self.drift(adapter)
        return out

    def drift(self, adapter: Step | None = None) -> Step:
        """Drift from the base model: the base's greedy answers to the held-out queries (one step shared by
        every run) and this model (the base when `adapter` is None) scored against them."""
        d = self.exp.data
        keys = get_task(d.task).leakage_keys(self.exp.eval)  # the leakage rule's keys (None: drift's default)
        cfg = {**{k: self.exp.eval[k] for k in ("dtype", "device") if k in self.exp.eval},
               "model": self.exp.model, **self._threads(), **({"keys": keys} if keys is not None else {}),
               **(self.exp.drift or {})}
        answers = self.step("drift_answers", cfg, fingerprint={"sha256": _digest(d.queries)},
                            volatile={"data": d.queries})
        return self.step("drift", cfg, {"answers": answers, **({"adapter": adapter} if adapter else {})})


def _instruction_files(eval_fields: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The instruction files an eval step reads (the task says which): their paths (passed, not hashed) and
    content digests (hashed), so editing a file reruns the evaluations and renaming it does not."""
    files = get_task(eval_fields.get("task", "halu")).instruction_files(eval_fields)
    return {"paths": files, "digests": {f"{sec}.{f}": _digest(p) for sec, paths in files.items()
                                        for f, p in paths.items()}}


def _uses_heldout(spec: str) -> bool:
    from delia.evaluation.instructions import parse_spec

    return any(i.set == "heldout" for i in parse_spec(spec))


def _check_heldout(exp: ExperimentConfig) -> None:
    """The `heldout` phrasings must occur in none of the training rows any model of the grid sees (the first
    max(size) rows of data.train); otherwise the set would not measure held-out phrasings."""
    from delia.evaluation.config import EvalConfig
    from delia.evaluation.instructions import heldout_overlap

    given, halu = exp.eval.get("halu", {}), EvalConfig(data="-", out="-").halu
    if not get_task(exp.data.task).supports("heldout") or not _uses_heldout(given.get("instructions",
                                                                                        halu.instructions)):
        return
    sizes = [*exp.grid.sizes, *(n for o in exp.methods.values() for n in o.get("sizes", []))]
    heldout = given.get("heldout_file") or halu.heldout_path
    found = heldout_overlap(heldout, exp.data.train, max(sizes))
    if found:
        first = min(found.values())
        raise ConfigError(f"eval.halu.instructions uses 'heldout', but {len(found)} of the phrasings of {heldout} "
                          f"occur in the first {max(sizes)} rows of {exp.data.train} (rows "
                          f"{', '.join(str(r) for r in sorted(found.values()))}), which the largest models train "
                          f"on: they are not held out. Use sizes below {first}, or halu.heldout_file with "
                          f"phrasings absent from training")


def _check_drift(steps: list[Step]) -> None:
    """Drift queries are the last rows of the query file: self-sampling (its first `limit` rows) must stay
    below them, or the tuned models would have trained on the base's answers to the drift queries."""
    from delia.evaluation.drift import first_heldout_row

    for a in (s for s in steps if s.kind == "drift_answers"):
        path, n = a.volatile["data"], a.resolved["queries"]
        first = first_heldout_row(path, n)
        if first < 0:
            raise ConfigError(f"drift.queries: {n} held-out queries asked for, but {path} has {first + n} rows")
        for s in steps:
            limit = s.volatile.get("limit", 0)
            if s.kind == "sample" and s.fingerprint == a.fingerprint and limit > first:
                raise ConfigError(f"drift: the {n} drift queries are rows {first + 1}..{first + n} of {path}, but "
                                  f"self-sampling reads its first {limit} rows; lower drift.queries, the ratios or "
                                  f"sample_margin, or use a longer query file")


AXES = ("sizes", "ratios", "seeds")  # per-method option keys that restrict the grid for that method


def method_options(exp: ExperimentConfig, method: str, cls: type) -> Any:
    """The method's options dataclass from the `methods:` block (a variant `m@r` reads `m`'s, then its own).

    Raises ConfigError naming `methods.NAME.KEY` (with the close matches) for an option the method lacks.
    """
    base, _ = split_method(method)
    given = merge(exp.methods.get(base, {}), exp.methods.get(method, {})) if base != method else \
        exp.methods.get(method, {})
    try:
        return from_dict(cls, given, where=f"methods.{method}")
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"methods.{method}: {e}" if "methods." not in str(e) else str(e)) from None


_DIGESTS: dict[str, str] = {}
_ROWS: dict[str, int] = {}


def _digest(path: str) -> str:
    if path not in _DIGESTS:
        _DIGESTS[path] = sha256_file(path)
    return _DIGESTS[path]


def _rows(path: str) -> int:
    """Non-blank lines of a data file (its rows, as the subset step counts them)."""
    from delia.data.sources import resolve_source

    if path not in _ROWS:
        with open(resolve_source(path), "rb") as f:
            _ROWS[path] = sum(1 for line in f if line.strip())
    return _ROWS[path]


@dataclass
class Plan:
    """The expanded grid: runs, and every distinct step in an order where inputs come first."""

    exp: ExperimentConfig
    runs: list[Run]
    steps: list[Step]


def expand(exp: ExperimentConfig) -> Plan:
    """Expand the grid into runs and a topologically ordered, deduplicated list of steps.

    Returns:
        The Plan. Raises ConfigError (unknown method, a stage rejecting its config) before anything runs.
    """
    from delia.methods import METHODS

    _DIGESTS.clear()  # files may have changed since the last plan in this process
    _ROWS.clear()
    _check_heldout(exp)
    pool: dict[str, Step] = {}
    runs: dict[tuple, Run] = {}
    g = exp.grid
    for method in g.methods:
        recipe = METHODS.get(split_method(method)[0])
        options = method_options(exp, method, recipe.options)  # recipes: checked at load (experiments.blocks)
        grid = {a: getattr(options, a) if getattr(options, a) is not None else getattr(g, a)
                for a in AXES}  # per-method restriction
        for size in grid["sizes"]:
            for ratio in grid["ratios"]:
                for seed in grid["seeds"]:
                    ctx = Ctx(exp, method, size, ratio, seed, pool, options)
                    steps = recipe(ctx)
                    axes = {a: ctx._axes[a] for a in ("size", "ratio", "seed") if a in ctx.used}
                    shown = {k: v for k, v in to_dict(options).items() if v is not None}
                    runs.setdefault((method, tuple(sorted(axes.items()))), Run(method, axes, steps, shown))
    ordered: list[Step] = []
    seen: set[str] = set()

    def visit(s: Step) -> None:
        if s.key in seen:
            return
        for inp in s.inputs.values():
            visit(inp)
        seen.add(s.key)
        ordered.append(s)

    for run in runs.values():
        for s in run.steps.values():
            visit(s)
    # One shared sample cache answers the most queries any slice needs (the limit is not part of its key).
    for s in ordered:
        if s.kind == "sample":
            s.volatile["limit"] = max(x.config["n_queries"] for x in ordered
                                      if x.kind == "slice" and x.inputs["cache"] is s)
    _check_drift(ordered)
    return Plan(exp, list(runs.values()), ordered)

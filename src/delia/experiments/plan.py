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

from delia.config import ConfigError, config_hash, merge
from delia.experiments.config import ExperimentConfig
from delia.experiments.stages import resolve, sha256_file


@dataclass
class Step:
    """One unit of cached work. `dir` is `steps/<kind>/<key>` under the experiment directory."""

    kind: str
    config: dict[str, Any]
    inputs: dict[str, Step] = field(default_factory=dict)
    fingerprint: dict[str, Any] = field(default_factory=dict)  # hashed, not passed (input file digests)
    volatile: dict[str, Any] = field(default_factory=dict)  # passed, not hashed (e.g. the sample limit)

    def __post_init__(self) -> None:
        self.resolved = resolve(self.kind, {**self.config, **self.volatile}, list(self.inputs))
        self.key = config_hash({"kind": self.kind, "config": self.resolved, "fingerprint": self.fingerprint,
                                "inputs": {r: s.key for r, s in sorted(self.inputs.items())}})

    def dir(self, root: str | Path) -> Path:
        return Path(root) / "steps" / self.kind / self.key


@dataclass
class Run:
    """One grid cell of one method: the axes its recipe used and its named steps (test/valid eval, train)."""

    method: str
    axes: dict[str, Any]
    steps: dict[str, Step]

    @property
    def id(self) -> str:
        tail = "-".join(f"{k}{v:g}" if isinstance(v, float) else f"{k}{v}" for k, v in sorted(self.axes.items()))
        return f"{self.method}/{tail or 'base'}"


class Ctx:
    """What a recipe sees: the grid point (reading an axis records that the method varies along it) and
    helpers that create the stage steps."""

    def __init__(self, exp: ExperimentConfig, method: str, size: int, ratio: float, seed: int,
                 pool: dict[str, Step]) -> None:
        self.exp, self.method, self._pool = exp, method, pool
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

    def option(self, name: str, default: Any) -> Any:
        """A per-method option from the experiment's `methods:` block."""
        return self.exp.methods.get(self.method, {}).get(name, default)

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
        rows = self.step("subset", {"path": path, "n": self.size}, fingerprint={"sha256": _digest(path)})
        if self.exp.data.task == "translation":  # src/ref rows -> chat rows the builder can diversify
            return self.transform("translation_chat", {"data": rows})
        return rows

    def diverse(self, n_rows: int) -> Step:
        """Self-sampled answers to the first queries, enough for `n_rows` usable rows."""
        path = self.exp.data.queries
        volatile: dict[str, Any] = {"limit": 1}
        if self.exp.threads:
            volatile["engine_options"] = {**self.exp.sample.get("engine_options", {}), "threads": self.exp.threads}
        sample = self.step("sample", {**self.exp.sample, "model": self.exp.model, "queries": path},
                           fingerprint={"sha256": _digest(path)}, volatile=volatile)
        n_queries = n_rows + math.ceil(n_rows * self.exp.sample_margin) + 2
        return self.step("slice", {"queries": path, "n_queries": n_queries}, {"cache": sample})

    def build(self, ratio: float, seed: int | None = None, **fields: Any) -> Step:
        """A training set: the downstream rows (instructions per `fields`) plus ratio x size diverse rows."""
        down = self.downstream()
        inputs = {"downstream": down}
        if ratio > 0:
            inputs["diverse"] = self.diverse(math.floor(ratio * self.size))
        token = {"token": ""} if self.exp.data.task == "translation" else {}  # no special token in translation
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
        cfg = merge({**self.exp.train, "model": self.exp.model, "seed": self.seed, **self._threads()}, fields)
        return self.step("train", cfg, {"data": data, **({"init": init} if init else {})})

    def evaluate(self, adapter: Step | None = None, **fields: Any) -> dict[str, Step]:
        """The test evaluation (generation) and, when the task has gold replies, the loss evaluation."""
        d = self.exp.data
        inputs = {"adapter": adapter} if adapter else {}
        base = {"task": d.task, "model": self.exp.model, **self._threads()}
        test = merge(merge({**base, "data": d.test}, self.exp.eval), fields)
        if d.task == "halu" and "seen_file" not in self.exp.eval.get("halu", {}):
            # "seen" phrasings = those of the smallest training size, so they were seen by every trained model
            # (at any size) and every method is scored on the same prompts
            sizes = [*self.exp.grid.sizes, *(n for o in self.exp.methods.values() for n in o.get("sizes", []))]
            seen = self.step("subset", {"path": d.train, "n": min(sizes)}, fingerprint={"sha256": _digest(d.train)})
            test_inputs = {**inputs, "seen": seen}
        else:
            test_inputs = dict(inputs)
        if d.test_rows:  # held-out rows of the test file, as a step of their own (so they are hashed by content)
            start, stop = d.test_rows
            if stop > _rows(d.test):
                raise ConfigError(f"data.test_rows: [{start}, {stop}) reaches past the {_rows(d.test)} rows of "
                                  f"{d.test}")
            rows = self.step("subset", {"path": d.test, "n": stop - start, "start": start},
                             fingerprint={"sha256": _digest(d.test)})
            out = {"test": self.step("eval", test, {**test_inputs, "examples": rows})}
        else:
            out = {"test": self.step("eval", test, test_inputs, fingerprint={"sha256": _digest(d.test)})}
        if d.valid:
            # Only teacher-forced scores are read from this evaluation, so it generates a single token.
            valid = merge(merge({**base, "data": d.valid, "generation": {"max_new_tokens": 1},
                                 "analysis": {"score": "on", "hidden": False}, "bootstrap": 0,
                                 "halu": {"instructions": "own"}}, self.exp.valid_eval), fields)
            out["valid"] = self.step("eval", valid, inputs, fingerprint={"sha256": _digest(d.valid)})
        if adapter:
            out["train"] = adapter
        return out


AXES = ("sizes", "ratios", "seeds")  # per-method option keys that restrict the grid for that method
_DIGESTS: dict[str, str] = {}
_ROWS: dict[str, int] = {}


def _digest(path: str) -> str:
    if path not in _DIGESTS:
        _DIGESTS[path] = sha256_file(path)
    return _DIGESTS[path]


def _rows(path: str) -> int:
    """Non-blank lines of a data file (its rows, as the subset step counts them)."""
    if path not in _ROWS:
        with open(path, "rb") as f:
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
    pool: dict[str, Step] = {}
    runs: dict[tuple, Run] = {}
    g = exp.grid
    for method in g.methods:
        recipe = METHODS.get(method)
        grid = {a: exp.methods.get(method, {}).get(a, getattr(g, a)) for a in AXES}  # per-method restriction
        for size in grid["sizes"]:
            for ratio in grid["ratios"]:
                for seed in grid["seeds"]:
                    ctx = Ctx(exp, method, size, ratio, seed, pool)
                    steps = recipe(ctx)
                    axes = {a: ctx._axes[a] for a in ("size", "ratio", "seed") if a in ctx.used}
                    runs.setdefault((method, tuple(sorted(axes.items()))), Run(method, axes, steps))
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
    return Plan(exp, list(runs.values()), ordered)

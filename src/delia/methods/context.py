"""What a method's recipe sees of the planner: the grid point, the method's typed options and the step helpers.

The planner (`delia.experiments.plan.Ctx`, `Step`) implements these protocols. Recipes are typed against them,
so the methods layer never imports the experiments layer above it (see tests/test_layers.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol


class Step(Protocol):
    """One planned unit of cached work; recipes only pass steps from one helper to the next."""

    kind: str
    key: str  # hash of the kind, resolved config and the inputs' keys
    config: dict[str, Any]


class Ctx(Protocol):
    """The grid point (reading an axis records that the method varies along it) and the step helpers."""

    exp: Any  # the ExperimentConfig; recipes read `exp.data` (task, train)
    method: str
    options: Any  # the method's options dataclass (delia.methods.options)

    @property
    def size(self) -> int: ...

    @property
    def ratio(self) -> float: ...

    @property
    def seed(self) -> int: ...

    def train_config(self) -> Any: ...

    def subset(self, path: str, n: int, start: int = 0) -> Step: ...

    def build(self, ratio: float, seed: int | None = None, **fields: Any) -> Step: ...

    def transform(self, name: str, inputs: dict[str, Step], **params: Any) -> Step: ...

    def train(self, data: Step, init: Step | None = None, **fields: Any) -> Step: ...

    def evaluate(self, adapter: Step | None = None, seen: Step | None = None, **fields: Any) -> dict[str, Step]: ...


def stage_fields(stage: str) -> set[str]:
    """The option names of a stage's config (`train` or `eval`): a recipe checks the hook it needs is there."""
    if stage == "train":
        from delia.training.config import TrainConfig as cls
    elif stage == "eval":
        from delia.evaluation.config import EvalConfig as cls
    else:
        raise ValueError(f"no stage {stage!r} with recipe hooks (train, eval)")
    return {f.name for f in dataclasses.fields(cls)}

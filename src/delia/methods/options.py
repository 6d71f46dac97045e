"""Each method's options as a typed dataclass: the `methods:` block of an experiment is checked against it, so a
typo (`icl: {kk: 3}`) is an error that names the right key instead of a silently ignored option.

Numbers that the recipes pass on as they are (`neftune: {alpha: 5}` and `{alpha: 5.0}`) are `int | float`: the
value keeps the type it was written with, so the steps it names keep their hashes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from delia.config import ConfigError, opt

Number = int | float


@dataclass
class MethodOptions:
    """What every method takes: restrictions of the grid axes for that method (default: the grid's)."""

    sizes: list[int] | None = opt(None, help="only these data sizes for this method")
    ratios: list[float] | None = opt(None, help="only these diverse ratios for this method")
    seeds: list[int] | None = opt(None, help="only these seeds for this method")

    def __post_init__(self) -> None:
        for name in ("sizes", "ratios", "seeds"):
            values = getattr(self, name)
            if values is not None and not values:
                raise ConfigError(f"{name}: give at least one value, or leave it out to use grid.{name}")


@dataclass
class TokenSeedOptions(MethodOptions):
    token_seed: int = opt(2024, help="seed of the new token's N(0, initializer_range^2) row")


@dataclass
class IclOptions(MethodOptions):
    k: int = opt(2, help="demonstrations before each prompt (halu: 2 on CPU, 3 on GPU; translation 3/5)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.k < 1:
            raise ConfigError(f"k must be >= 1, got {self.k}")


@dataclass
class DipmtOptions(IclOptions):
    k: int = opt(3, help="demonstrations (with dictionary hints) before each prompt")


@dataclass
class FactOptions(MethodOptions):
    n_q: int = opt(10, help="questions per fact (the paper's fact-based scaling: 5, 10, 20)")

    def __post_init__(self) -> None:
        super().__post_init__()
        from delia.methods.facts import QUESTIONS

        if not 1 <= self.n_q <= len(QUESTIONS):
            raise ConfigError(f"n_q must be in 1..{len(QUESTIONS)}, got {self.n_q}")


@dataclass
class DmtOptions(MethodOptions):
    k: Number = opt(1 / 256, help="fraction of the task rows mixed into stage 2 (DMT's best: 1/256)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.k <= 1:
            raise ConfigError(f"k must be in (0, 1], got {self.k}")


@dataclass
class CtgOptions(MethodOptions):
    lam: Number = opt(1.0, help="guidance strength lambda of (1 + lambda) M_desc - lambda M_task")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.lam < 0:
            raise ConfigError(f"lam must be >= 0, got {self.lam}")


@dataclass
class NeftuneOptions(MethodOptions):
    alpha: Number = opt(5.0, help="NEFTune noise scale alpha (noise alpha / sqrt(L d) on the embeddings)")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.alpha <= 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")


def summary(cls: type[MethodOptions]) -> str:
    """' (options: k=2)' for `delia ls methods`: the method's own options and their defaults ('' if none)."""
    own = [f for f in dataclasses.fields(cls) if f.name not in {g.name for g in dataclasses.fields(MethodOptions)}]
    if not own:
        return ""
    return " (options: " + ", ".join(f"{f.name}={f.default:g}" if isinstance(f.default, float) else
                                     f"{f.name}={f.default}" for f in own) + ")"

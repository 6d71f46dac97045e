"""The `delia build` config."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from delia.config import DEFAULT_TOKEN, ConfigError, opt
from delia.diversify.apply import HALU_TEMPLATE, Template


@dataclass
class BuildConfig:
    """Turn downstream data plus a diverse cache into a DELIA training set."""

    downstream: str = opt(help="Downstream examples (any delia format; chat rows for the halu task).")
    out: str = opt(help="Output directory: train.jsonl, manifest.json, excluded.jsonl.")
    ratio: float = opt(0.0, help="Diverse rows per downstream row (R); 0 = no diverse data (the CIT ablation).")
    diverse: str | None = opt(None, help="Diverse cache JSONL written by `delia sample` (needed when ratio > 0).")
    seed: int = opt(42, help="Seed for choosing diverse rows, instructions and the order.")
    schedule: Literal["shuffle", "interleave"] = opt(
        "shuffle", help="shuffle: one random permutation of everything; interleave: R diverse rows after each "
                        "downstream row.")
    instructions: str | None = opt(None, help="File of instruction variants (one per line): each downstream row "
                                              "gets a seeded, balanced draw. Unset: keep the data's instructions.")
    fixed_instruction: str | None = opt(None, help="One instruction for every downstream row (the 'w/o diversified "
                                                   "downstream data' ablation); '@first' = row 1's instruction.")
    template: str = opt(HALU_TEMPLATE, help="Layout of the downstream user turn with {context} and {instruction}.")
    token: str = opt(DEFAULT_TOKEN, help="Special token the instructions must contain ('' = no token, no checks).")
    token_max: int = opt(2, help="Warn when an instruction contains the token more often than this.")
    allow_repeat: bool = opt(False, help="Reuse diverse rows when the cache holds fewer than R x |D| usable rows.")
    exclude_truncated: bool = opt(True, help="Exclude diverse rows cut at the sampling budget (finish_reason "
                                             "'length'): an answer cut mid-sentence would be trained on with an "
                                             "end-of-turn token. `false` keeps them (counted in the manifest).")
    model: str = opt("smollm2-135m-instruct", help="Model whose tokenizer checks the token ('' skips the check).")

    def __post_init__(self) -> None:
        self.ratio = float(self.ratio)
        if not math.isfinite(self.ratio) or self.ratio < 0:
            raise ConfigError(f"ratio: must be a number >= 0, got {self.ratio}")
        if self.ratio > 0 and not self.diverse:
            raise ConfigError(f"ratio {self.ratio} > 0 needs a diverse cache (diverse / --diverse)")
        if self.instructions and self.fixed_instruction is not None:
            raise ConfigError("give instructions (variants) or fixed_instruction, not both")
        if self.fixed_instruction is not None and not self.fixed_instruction.strip():
            raise ConfigError("fixed_instruction is empty")
        if self.token != self.token.strip():
            raise ConfigError(f"token must not have surrounding spaces, got {self.token!r}")
        if self.token_max < 1:
            raise ConfigError(f"token_max must be >= 1, got {self.token_max}")
        Template(self.template)  # raises ConfigError when malformed

    @property
    def mode(self) -> Literal["keep", "sample", "fixed"]:
        return "sample" if self.instructions else "fixed" if self.fixed_instruction is not None else "keep"

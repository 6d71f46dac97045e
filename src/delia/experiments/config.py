"""`ExperimentConfig`: a grid (methods x data sizes x diverse ratios x seeds) plus the stage settings it shares."""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from delia.config import ConfigError, opt

HALU = "builtin:halu"  # packaged data (delia.data.sources); any path or hub id works instead


@dataclass
class GridConfig:
    """The axes of the grid. A method only varies along the axes its recipe reads (e.g. `original` has none)."""

    methods: list[str] = opt(["original", "cit", "delia"], help="method names (see `delia ls methods`); "
                                                                "`NAME@RECIPE` trains with a `recipes:` entry")
    sizes: list[int] = opt([100], help="downstream data sizes: the first N training rows (paper: 30/65/85/100)")
    ratios: list[float] = opt([10.0], help="diverse rows per downstream row (paper: up to 520)")
    seeds: list[int] = opt([42], help="seeds of mixing and training (one run per seed for trained methods)")

    def __post_init__(self) -> None:
        for name in ("methods", "sizes", "ratios", "seeds"):
            if not getattr(self, name):
                raise ConfigError(f"grid.{name}: give at least one value")
        if any(n < 1 for n in self.sizes):
            raise ConfigError(f"grid.sizes: every size must be >= 1, got {self.sizes}")
        if any(r < 0 for r in self.ratios):
            raise ConfigError(f"grid.ratios: every ratio must be >= 0, got {self.ratios}")
        for name in ("methods", "sizes", "ratios", "seeds"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ConfigError(f"grid.{name}: repeated values in {values}")


@dataclass
class DataConfig:
    """The task's files."""

    task: str = opt("halu", help="a registered task (`delia ls tasks`): halu (formatted generation), "
                                 "translation, json, label, text")
    train: str = opt(f"{HALU}/train", help="downstream training rows (the size axis takes the first N)")
    test: str = opt(f"{HALU}/test", help="test examples (generation: format/label accuracy, robustness)")
    valid: str | None = opt(f"{HALU}/valid", help="rows with gold replies: downstream loss, first-token "
                                                        "state space (Figures 3-4); null skips this evaluation")
    queries: str = opt("builtin:diverse/alpaca_5000", help="diverse queries for self-sampling")
    test_rows: list[int] | None = opt(None, help="[start, stop): evaluate only these rows of `test` (e.g. when "
                                                 "train and test come from one file)")

    def __post_init__(self) -> None:
        from delia.task import check_task

        check_task(self.task, "data.task")
        if self.test_rows is not None and (len(self.test_rows) != 2 or not 0 <= self.test_rows[0] < self.test_rows[1]):
            raise ConfigError(f"data.test_rows must be [start, stop) with 0 <= start < stop, got {self.test_rows}")


@dataclass
class CostModel:
    """Seconds per unit of work, for `--dry-run` estimates. Defaults: CPU seconds measured on the 2-core CPU box
    with one torch thread (fp32, SmolLM2-135M; docs/experiments.md), i.e. roughly single-threaded wall time on a
    quiet machine. Generation is charged per token of budget (rows x max_new_tokens), as most rows use it."""

    sample_token: float = opt(0.018, help="seconds per token of sampling budget (rows x max_new_tokens)")
    train_row: float = opt(2.8, help="seconds per downstream training row per epoch (halu rows, ~320 tokens)")
    train_diverse_row: float = opt(1.3, help="seconds per self-sampled training row per epoch at 128 sampled "
                                             "tokens (scaled by the sample stage's max_new_tokens / 128)")
    eval_token: float = opt(0.02, help="seconds per token of evaluation budget (prompts x max_new_tokens)")
    score_row: float = opt(1.0, help="seconds per teacher-forced scoring row")
    hook_factor: dict[str, float] = opt({"arithmetic": 5.5, "icl": 2.6, "dipmt": 2.6},
                                        help="evaluation cost multiplier per decoder / prompt hook (measured: the "
                                             "arithmetic decoder runs rows one by one with two prompts; ICL prompts "
                                             "carry k demonstrations)")
    model_load: float = opt(5.0, help="seconds to load a model (per sample / train / eval step)")
    row_tokens: float | None = opt(None, help="tokens of the rows `train_row` was measured on; set: a downstream "
                                              "row costs train_row x its estimated tokens (from its characters) / "
                                              "row_tokens; unset: every row costs train_row")
    early_stop: float = opt(1.0, help="share of the step budget a validated training run is expected to train "
                                      "before it stops (train.validation; 1 = the whole budget)")


@dataclass
class ExperimentConfig:
    """One experiment: which methods to compare on which grid, and how each stage runs."""

    name: str = opt("experiment", help="experiment name (the default output directory)")
    out: str | None = opt(None, help="output directory (default runs/experiments/NAME)")
    model: str = opt("smollm2-135m-instruct", help="base model for every stage")
    data: DataConfig = field(default_factory=DataConfig, metadata={"help": "task files"})
    grid: GridConfig = field(default_factory=GridConfig, metadata={"help": "grid axes"})
    # The stage blocks hold the fields the user set, as written: the planner builds each step's config from them
    # (so unset fields keep today's step hashes); `check_blocks` validates them against the stage's dataclass at
    # load time, so a typo or a wrong type fails here, naming the key, before anything is planned or loaded.
    sample: dict[str, Any] = opt({}, help="SampleConfig fields (delia sample), e.g. max_new_tokens")
    build: dict[str, Any] = opt({}, help="BuildConfig fields (delia build), e.g. schedule")
    train: dict[str, Any] = opt({}, help="TrainConfig fields (delia train), e.g. max_length")
    eval: dict[str, Any] = opt({}, help="EvalConfig fields for the test evaluation (delia eval)")
    valid_eval: dict[str, Any] = opt({}, help="EvalConfig fields for the gold-reply (loss) evaluation")
    token: str | None = opt(None, help="the special token for every stage: build.token, train.special_tokens "
                                       "and eval/valid_eval halu.special_tokens ('' = none); null = each "
                                       "stage's own setting (default <sep>); a stage block that disagrees is "
                                       "an error")
    methods: dict[str, dict[str, Any]] = opt({}, help="per-method options, e.g. {dmt: {k: 0.0039}, icl: {k: 2}}; "
                                                      "sizes/ratios/seeds there restrict the grid for that method; "
                                                      "checked against the method's options (`delia ls methods`)")
    recipes: dict[str, dict[str, Any]] = opt({}, help="named training recipes: train overrides on top of `train:`, "
                                                      "run as `METHOD@NAME` in grid.methods, e.g. {paper: "
                                                      "{learning_rate: 2.0e-4, epochs: 1, warmup_steps: 25, "
                                                      "batch_size: null}}")
    drift: dict[str, Any] | None = opt(None, help="drift from the base model on held-out general queries (the last "
                                                 "rows of data.queries), e.g. {queries: 64, max_new_tokens: 256}: "
                                                 "DriftConfig fields; adds a `drift` step to every run; null = off")
    threads: int | None = opt(None, help="torch CPU threads for every stage (not part of any hash); on cores "
                                        "shared with other jobs 1 avoids OpenMP oversubscription")
    sample_margin: float = opt(0.05, help="extra queries sampled up front per build, covering answers the build "
                                          "excludes (empty, cut at the budget); when they still leave too few, "
                                          "the build's slice samples more (a top-up)")
    cost: CostModel = field(default_factory=CostModel, metadata={"help": "dry-run cost model"})
    evidence: str | None = opt(None, help="where a larger run of the same comparison is reported (e.g. "
                                          "docs/halu100/report.md); the verdict of a small run names it")

    def __post_init__(self) -> None:
        if not self.name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"name: use letters, digits, '-' and '_', got {self.name!r}")
        for stage in ("sample", "build", "train", "eval", "valid_eval"):
            reserved = {"out", "data", "adapter", "downstream", "diverse", "queries"} & set(getattr(self, stage))
            if reserved:
                raise ConfigError(f"{stage}: {sorted(reserved)} are set by the experiment (from data.* and the "
                                  f"grid); remove them")
        if self.drift is not None:
            reserved = {"out", "data", "adapter", "answers", "model"} & set(self.drift)
            if reserved:
                raise ConfigError(f"drift: {sorted(reserved)} are set by the experiment (data.queries, model, each "
                                  f"run's adapter); remove them")
        for name, overrides in self.recipes.items():
            if not isinstance(overrides, dict):
                raise ConfigError(f"recipes.{name}: expected a mapping of train fields, got {overrides!r}")
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ConfigError(f"recipes: name {name!r}: use letters, digits, '-' and '_'")
            reserved = {"out", "data", "init_adapter"} & set(overrides)
            if reserved:
                raise ConfigError(f"recipes.{name}: {sorted(reserved)} are set by the experiment; remove them")
        for method in self.grid.methods:
            base, recipe = split_method(method)
            if not base:
                raise ConfigError(f"grid.methods: {method!r} names no method before '@'")
            if recipe is not None and recipe not in self.recipes:
                close = difflib.get_close_matches(recipe, list(self.recipes), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"grid.methods: {method!r}: no recipe {recipe!r} under `recipes:`{hint}")
        # Options of a real method the grid does not run (it was narrowed, e.g. grid.methods=[delia] on the command
        # line) stay idle; a name that is no method, or a variant of a missing recipe, is a mistake.
        from delia.methods import METHODS

        named = set(self.grid.methods) | {split_method(m)[0] for m in self.grid.methods}
        for name in sorted(set(self.methods) - named):
            base, recipe = split_method(name)
            if base not in METHODS or (recipe is not None and recipe not in self.recipes):
                close = difflib.get_close_matches(name, sorted(named), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"methods: options for {name!r}, which is neither in grid.methods nor a method "
                                  f"(with its recipe){hint}")
        for name, options in self.methods.items():
            if not isinstance(options, dict):
                raise ConfigError(f"methods.{name}: expected a mapping of options, got {options!r}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be >= 1, got {self.threads}")
        if not 0 <= self.sample_margin <= 1:
            raise ConfigError(f"sample_margin must be in [0, 1], got {self.sample_margin}")
        from delia.experiments.blocks import check_blocks

        check_blocks(self)

    @property
    def out_dir(self) -> str:
        return self.out or f"runs/experiments/{self.name}"


def split_method(name: str) -> tuple[str, str | None]:
    """`delia@paper` -> ("delia", "paper"); a plain name -> (name, None)."""
    base, at, recipe = name.partition("@")
    return base, (recipe if at else None)

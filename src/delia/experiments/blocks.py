"""An experiment's stage blocks (`sample:`, `build:`, `train:`, `eval:`, `valid_eval:`, `drift:`, `recipes:`),
typed at load time: each block is checked against its stage's config dataclass, and `token:` sets the special
token of every stage at once.

The blocks stay the fields the user wrote, not resolved dataclasses: the planner builds each step's config from
exactly those fields (the stage fills the defaults when the step is resolved), so a config that sets nothing new
keeps every step hash. Checking them here only moves the error earlier: a typo (`train: {lerning_rate: ...}`)
or a wrong type fails when the YAML loads, naming the key and its close matches, before planning or any model load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from delia.config import ConfigError, from_dict, merge

if TYPE_CHECKING:
    from delia.experiments.config import ExperimentConfig

def _stage_classes() -> dict[str, type]:
    from delia.evaluation.config import EvalConfig
    from delia.evaluation.drift import DriftConfig
    from delia.mixing.config import BuildConfig
    from delia.training.config import TrainConfig

    return {"build": BuildConfig, "train": TrainConfig, "eval": EvalConfig, "valid_eval": EvalConfig,
            "drift": DriftConfig}


def _sample_class() -> type:
    from delia.sampling.run import SampleConfig  # imports the engines (torch): only when a sample block is set

    return SampleConfig


def _typed(where: str, cls: type, fields: dict[str, Any], fixed: dict[str, Any]) -> Any:
    """`fields` as a `cls` instance, with `fixed` standing in for what the experiment sets (paths, the task).
    The blocks cannot set the paths (ExperimentConfig rejects them), so `fields` only overrides the task."""
    try:
        return from_dict(cls, merge(fixed, fields), where=where)
    except (ConfigError, ValueError) as e:  # a __post_init__ check does not know which block it is in
        msg = str(e)
        raise ConfigError(msg if f"{where}." in msg or msg.startswith(f"{where}:") else f"{where}: {msg}") from None


def check_blocks(exp: ExperimentConfig) -> None:
    """Validate every stage block against its dataclass and fold `exp.token` into the blocks.

    Raises:
        ConfigError: naming `BLOCK.KEY` for an unknown key (with close matches) or a wrong type or value, or
        the blocks whose special tokens disagree (with each other or with `token:`).
    """
    classes = _stage_classes()
    # Stand-ins for the fields the experiment fills in (from data.*, the grid, each run's inputs): the planner
    # sets them on every step, so they only need to be present here. The task is a default the block may override.
    fixed = {"build": {"downstream": "-", "out": "-", "diverse": "-"}, "train": {},
             "eval": {"task": exp.data.task, "data": "-", "out": "-"},
             "valid_eval": {"task": exp.data.task, "data": "-", "out": "-"}, "drift": {"out": "-"}}
    if exp.token is not None:
        _fold_token(exp)
    typed = {stage: _typed(stage, classes[stage], getattr(exp, stage), fixed[stage]) for stage in fixed
             if stage != "drift" or exp.drift is not None}
    if exp.sample:
        _typed("sample", _sample_class(), exp.sample, {"out": "-", "queries": "-"})
    trains = {"train": typed["train"]}
    for name, overrides in exp.recipes.items():
        trains[f"recipes.{name}"] = _typed(f"recipes.{name}", classes["train"], merge(exp.train, overrides), {})
    _check_agree(typed["build"].token, trains, {s: typed[s].halu.special_tokens for s in ("eval", "valid_eval")})


def _fold_token(exp: ExperimentConfig) -> None:
    """Write `exp.token` into the blocks; a block that already says otherwise is an error (not overridden)."""
    token = exp.token
    if token != token.strip():
        raise ConfigError(f"token: must not have surrounding spaces, got {token!r}")
    tokens = [token] if token else []
    implied = {"build": {"token": token}, "train": {"special_tokens": tokens},
               "eval": {"halu": {"special_tokens": tokens}}, "valid_eval": {"halu": {"special_tokens": tokens}}}
    given = {"build.token": exp.build.get("token"), "train.special_tokens": exp.train.get("special_tokens"),
             **{f"recipes.{n}.special_tokens": r.get("special_tokens") for n, r in exp.recipes.items()},
             **{f"{s}.halu.special_tokens": (getattr(exp, s).get("halu") or {}).get("special_tokens")
                for s in ("eval", "valid_eval")}}
    for key, value in given.items():
        want = token if key == "build.token" else tokens
        if value is not None and value != want:
            raise ConfigError(f"{key}: {value!r} disagrees with token: {token!r}; remove it (`token:` sets the "
                              f"special token of every stage)")
    for stage, fields in implied.items():
        setattr(exp, stage, merge(getattr(exp, stage), fields))


def _check_agree(build_token: str, trains: dict[str, Any], evals: dict[str, list[str]]) -> None:
    """The token the built data uses must be among the tokens the training adds (it also adds the build
    manifest's, so a mismatch adds a token no row uses) and the tokens the evaluation adds to an untrained model."""
    if not build_token:  # no token in the data: nothing to agree on
        return
    for where, cfg in trains.items():
        if build_token not in cfg.special_tokens:
            raise ConfigError(f"{where}.special_tokens {cfg.special_tokens} lacks build.token {build_token!r}: the "
                              f"training would add tokens its data does not use; set `token: {build_token}` once "
                              f"instead (it sets every stage)")
    for where, tokens in evals.items():
        if build_token not in tokens:
            raise ConfigError(f"{where}.halu.special_tokens {tokens} lacks build.token {build_token!r}: the "
                              f"evaluation would not know the trained token; set `token: {build_token}` once "
                              f"instead (it sets every stage)")

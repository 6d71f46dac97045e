"""Every baseline and ablation as a recipe over the stages (baselines.md). A recipe reads the grid point it
needs from `ctx` (size, ratio, seed) and returns its named steps; it never copies a stage."""

from __future__ import annotations

from delia.config import ConfigError
from delia.experiments.plan import Ctx, Step
from delia.methods.facts import D_SEP
from delia.registry import registry

METHODS = registry("method")
Steps = dict[str, Step]

# Mean-embedding init averages the description's tokens without the token itself (baselines.md §3).
D_SEP_TEXT = D_SEP.replace("<sep> ", "", 1)


def _halu(ctx: Ctx, method: str) -> None:
    if ctx.exp.data.task != "halu":
        raise ConfigError(f"method {method!r} is defined for the halu task only (data.task is "
                          f"{ctx.exp.data.task!r})")


def _needs(ctx: Ctx, method: str, stage: str, field: str, why: str) -> None:
    """Fail at planning time, with the reason, when a stage lacks the hook a method needs."""
    import dataclasses

    from delia.experiments.stages import SPECS

    if field not in {f.name for f in dataclasses.fields(SPECS[stage].cls())}:
        raise ConfigError(f"method {method!r} needs the `{stage}` option {field!r} ({why}), which this version "
                          f"of delia's {stage} stage does not have yet; remove {method!r} from grid.methods")


@METHODS.register("original", help="the base model as is, untrained (<sep> stays plain text)")
def original(ctx: Ctx) -> Steps:
    return ctx.evaluate(None, halu={"token_init": "none"})


@METHODS.register("random_init", help="base model + <sep> with a seeded N(0, initializer_range^2) row; untrained")
def random_init(ctx: Ctx) -> Steps:
    _halu(ctx, "random_init")
    return ctx.evaluate(None, halu={"token_init": "random", "token_seed": ctx.option("token_seed", 2024)})


@METHODS.register("mean_init", help="base model + <sep> = mean embedding of the format description; untrained")
def mean_init(ctx: Ctx) -> Steps:
    _halu(ctx, "mean_init")
    return ctx.evaluate(None, halu={"token_init": "mean", "token_description": D_SEP_TEXT})


@METHODS.register("icl", help="k demonstrations from the training rows as earlier chat turns; untrained")
def icl(ctx: Ctx) -> Steps:
    _needs(ctx, "icl", "eval", "prompt_hook", "the k-shot demonstrations put before each prompt")
    return ctx.evaluate(None, prompt_hook="icl", hook_options={"path": ctx.exp.data.train, "k": ctx.option("k", 2),
                                                                "seed": 0})


@METHODS.register("cit", help="common instruction tuning: LoRA SFT on the downstream rows only (DELIA at ratio 0)")
def cit(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=0)))


@METHODS.register("fact_based", help="CIT data + n_q Q&A rows per fact of the <sep> description (Mecklenburg)")
def fact_based(ctx: Ctx) -> Steps:
    _halu(ctx, "fact_based")
    data = ctx.transform("fact_qa", {"data": ctx.build(ratio=0)}, n_q=ctx.option("n_q", 10), seed=ctx.seed)
    return ctx.evaluate(ctx.train(data))


@METHODS.register("dmt", help="two-stage DMT: task rows, then the same adapter on diverse + k x |D| task rows")
def dmt(ctx: Ctx) -> Steps:
    _needs(ctx, "dmt", "train", "init_adapter", "stage 2 continues stage 1's adapter")
    stage1 = ctx.train(ctx.build(ratio=0))
    mix = ctx.transform("dmt_stage2", {"data": ctx.build(ratio=ctx.ratio)}, k=ctx.option("k", 1 / 256),
                        seed=ctx.seed)
    return ctx.evaluate(ctx.train(mix, init=stage1))


@METHODS.register("ctg", help="controlled generation by language-model arithmetic: (1+l) M_desc - l M_task")
def ctg(ctx: Ctx) -> Steps:
    _halu(ctx, "ctg")
    _needs(ctx, "ctg", "eval", "decoder", "the language-model arithmetic decoder")
    return ctx.evaluate(None, decoder="arithmetic", hook_options={"lam": ctx.option("lam", 1.0), "system": D_SEP})


@METHODS.register("dipmt", help="DiPMT: dictionary hints from an induced lexicon + 3 demonstrations (translation)")
def dipmt(ctx: Ctx) -> Steps:
    if ctx.exp.data.task != "translation":
        raise ConfigError("method 'dipmt' is defined for the translation task only")
    _needs(ctx, "dipmt", "eval", "prompt_hook", "the DiPMT prompt with demonstrations and hints")
    return ctx.evaluate(None, prompt_hook="dipmt", hook_options={"path": ctx.exp.data.train, "k": ctx.option("k", 3),
                                                                  "seed": 0})


@METHODS.register("neftune", help="CIT with NEFTune embedding noise alpha/sqrt(L d) in training only")
def neftune(ctx: Ctx) -> Steps:
    alpha = ctx.option("alpha", 5.0)
    return ctx.evaluate(ctx.train(ctx.build(ratio=0), trl={"neftune_noise_alpha": alpha}))


@METHODS.register("delia", help="DELIA: diversified downstream rows + ratio x |D| self-sampled diverse rows")
def delia(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=ctx.ratio)))


# Table 4's ablations. "w/ all" is DELIA and "w/o extensive diverse data" is CIT: the same steps, so the
# planner shares their work; they are registered under their own names so the table reads like the paper's.


@METHODS.register("w_all", help="ablation: diversified downstream + diverse data (= DELIA)")
def w_all(ctx: Ctx) -> Steps:
    return delia(ctx)


@METHODS.register("wo_diverse", help="ablation: without extensive diverse data (= CIT)")
def wo_diverse(ctx: Ctx) -> Steps:
    return cit(ctx)


@METHODS.register("wo_diversified", help="ablation: one fixed instruction (row 1's) + diverse data")
def wo_diversified(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=ctx.ratio, fixed_instruction="@first")))


@METHODS.register("wo_all", help="ablation: one fixed instruction, no diverse data")
def wo_all(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=0, fixed_instruction="@first")))


"""Every baseline, ablation and control as a recipe over the stages (baselines.md). A recipe reads the grid
point it needs from `ctx` (size, ratio, seed) and its typed options (`ctx.options`, declared with the recipe in
`delia.methods.options`) and returns its named steps; it never copies a stage."""

from __future__ import annotations

from collections.abc import Callable

from delia.config import DEFAULT_TOKEN, ConfigError
from delia.methods.context import Ctx, Step, stage_fields
from delia.methods.facts import D_SEP
from delia.methods.options import (CtgOptions, DipmtOptions, DmtOptions, FactOptions, IclOptions, MethodOptions,
                                   NeftuneOptions, TokenSeedOptions, summary)
from delia.registry import registry

METHODS = registry("method")
Steps = dict[str, Step]
Recipe = Callable[[Ctx], Steps]


def method(name: str, help: str, options: type[MethodOptions] = MethodOptions) -> Callable[[Recipe], Recipe]:
    """Register a recipe under `name` with its options dataclass (shown by `delia ls methods`)."""

    def deco(fn: Recipe) -> Recipe:
        fn.options = options  # type: ignore[attr-defined]
        METHODS.add(name, fn, help=help + summary(options))
        return fn

    return deco

# Mean-embedding init averages the description's tokens without the token itself (baselines.md §3).
D_SEP_TEXT = D_SEP.replace("<sep> ", "", 1)


def _needs_task(ctx: Ctx, method: str, capability: str, what: str) -> None:
    """Fail at planning time when the experiment's task lacks what the method works on."""
    from delia.task import get_task

    if not get_task(ctx.exp.data.task).supports(capability):
        raise ConfigError(f"method {method!r} needs a task with {what} (capability {capability!r}); data.task "
                          f"{ctx.exp.data.task!r} has none")


def _needs(ctx: Ctx, method: str, stage: str, field: str, why: str) -> None:
    """Fail at planning time, with the reason, when a stage lacks the hook a method needs."""
    if field not in stage_fields(stage):
        raise ConfigError(f"method {method!r} needs the `{stage}` option {field!r} ({why}), which this version "
                          f"of delia's {stage} stage does not have yet; remove {method!r} from grid.methods")


@method("original", help="the base model as is, untrained (<sep> stays plain text)")
def original(ctx: Ctx) -> Steps:
    from delia.task import get_task

    # the task's options section (halu for the paper's tasks: their step keys stay as they were)
    return ctx.evaluate(None, **{get_task(ctx.exp.data.task).options_key: {"token_init": "none"}})


@method("random_init", help="base model + <sep> with a seeded N(0, initializer_range^2) row; untrained",
        options=TokenSeedOptions)
def random_init(ctx: Ctx) -> Steps:
    _needs_task(ctx, "random_init", "special_token", "a format special token")
    return ctx.evaluate(None, halu={"token_init": "random", "token_seed": ctx.options.token_seed})


@method("mean_init", help="base model + <sep> = mean embedding of the format description; untrained")
def mean_init(ctx: Ctx) -> Steps:
    _needs_task(ctx, "mean_init", "special_token", "a format special token")
    return ctx.evaluate(None, halu={"token_init": "mean", "token_description": D_SEP_TEXT})


@method("icl", help="k demonstrations from the training rows as earlier chat turns; untrained", options=IclOptions)
def icl(ctx: Ctx) -> Steps:
    _needs(ctx, "icl", "eval", "prompt_hook", "the k-shot demonstrations put before each prompt")
    return ctx.evaluate(None, prompt_hook="icl", hook_options={"path": ctx.exp.data.train, "k": ctx.options.k,
                                                                "seed": 0})


@method("cit", help="common instruction tuning: LoRA SFT on the downstream rows only (DELIA at ratio 0); the "
                   "same epochs over the same rows as DELIA, so the equal downstream-exposure control")
def cit(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=0)))


@method("cit_steps", help="control: CIT trained for exactly as many optimizer steps (of the same batch size) as "
                          "DELIA at the same size, ratio, seed and recipe")
def cit_steps(ctx: Ctx) -> Steps:
    from delia.mixing.schedule import diverse_count
    from delia.training.config import effective_batch, optimizer_steps

    rows = ctx.size + diverse_count(ctx.ratio, ctx.size)[0]  # the rows of DELIA's build, by the builder's count
    if rows == ctx.size:  # no diverse rows: DELIA is CIT, and so is this control (the same steps)
        return cit(ctx)
    train = ctx.train_config()
    # The batch is DELIA's too: equal steps of equal size (without it CIT's default batch would be 16, not 64).
    return ctx.evaluate(ctx.train(ctx.build(ratio=0), max_steps=optimizer_steps(train, rows),
                                  batch_size=effective_batch(rows, train.batch_size)))


@method("fact_based", help="CIT data + n_q Q&A rows per fact of the <sep> description (Mecklenburg)",
        options=FactOptions)
def fact_based(ctx: Ctx) -> Steps:
    _needs_task(ctx, "fact_based", "format_facts", "the facts of its format description")
    data = ctx.transform("fact_qa", {"data": ctx.build(ratio=0)}, n_q=ctx.options.n_q, seed=ctx.seed)
    return ctx.evaluate(ctx.train(data))


@method("dmt", help="two-stage DMT: task rows, then the same adapter on diverse + k x |D| task rows",
        options=DmtOptions)
def dmt(ctx: Ctx) -> Steps:
    _needs(ctx, "dmt", "train", "init_adapter", "stage 2 continues stage 1's adapter")
    stage1 = ctx.train(ctx.build(ratio=0))
    mix = ctx.transform("dmt_stage2", {"data": ctx.build(ratio=ctx.ratio)}, k=ctx.options.k,
                        seed=ctx.seed)
    return ctx.evaluate(ctx.train(mix, init=stage1))


@method("ctg", help="controlled generation by language-model arithmetic: (1+l) M_desc - l M_task",
        options=CtgOptions)
def ctg(ctx: Ctx) -> Steps:
    _needs_task(ctx, "ctg", "special_token", "a format special token")
    _needs(ctx, "ctg", "eval", "decoder", "the language-model arithmetic decoder")
    system = D_SEP.replace(DEFAULT_TOKEN, ctx.exp.token or DEFAULT_TOKEN)  # the description names the run's token
    return ctx.evaluate(None, decoder="arithmetic", hook_options={"lam": ctx.options.lam, "system": system})


@method("dipmt", help="DiPMT: dictionary hints from an induced lexicon + 3 demonstrations (translation)",
        options=DipmtOptions)
def dipmt(ctx: Ctx) -> Steps:
    _needs_task(ctx, "dipmt", "dictionary_hints", "source/target words to give dictionary hints for")
    _needs(ctx, "dipmt", "eval", "prompt_hook", "the DiPMT prompt with demonstrations and hints")
    return ctx.evaluate(None, prompt_hook="dipmt", hook_options={"path": ctx.exp.data.train, "k": ctx.options.k,
                                                                  "seed": 0})


@method("neftune", help="CIT with NEFTune embedding noise alpha/sqrt(L d) in training only", options=NeftuneOptions)
def neftune(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=0), trl={"neftune_noise_alpha": ctx.options.alpha}))


@method("delia", help="DELIA: diversified downstream rows + ratio x |D| self-sampled diverse rows")
def delia(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=ctx.ratio)))


# Table 4's ablations. "w/ all" is DELIA and "w/o extensive diverse data" is CIT: the same steps, so the
# planner shares their work; they are registered under their own names so the table reads like the paper's.


@method("w_all", help="ablation: diversified downstream + diverse data (= DELIA)")
def w_all(ctx: Ctx) -> Steps:
    return delia(ctx)


@method("wo_diverse", help="ablation: without extensive diverse data (= CIT)")
def wo_diverse(ctx: Ctx) -> Steps:
    return cit(ctx)


def _fixed_seen(ctx: Ctx) -> Step | None:
    """A fixed-instruction run's "seen" phrasing is the one it trained on: training row 1's instruction (what
    `fixed_instruction: "@first"` takes), so its seen set is that row alone, not the other runs' phrasings."""
    from delia.task import get_task

    return ctx.subset(ctx.exp.data.train, 1) if get_task(ctx.exp.data.task).supports("seen_from_training") \
        else None


@method("wo_diversified", help="ablation: one fixed instruction (row 1's) + diverse data; scored 'seen' on it")
def wo_diversified(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=ctx.ratio, fixed_instruction="@first")), seen=_fixed_seen(ctx))


@method("wo_all", help="ablation: one fixed instruction, no diverse data; scored 'seen' on it")
def wo_all(ctx: Ctx) -> Steps:
    return ctx.evaluate(ctx.train(ctx.build(ratio=0, fixed_instruction="@first")), seen=_fixed_seen(ctx))


@method("plain", help="common instruction tuning as a user does it without delia: every row under one fixed "
                      "phrasing, training row 1's (your instruction + format description as written, no token), "
                      "no diverse data")
def plain(ctx: Ctx) -> Steps:
    # token "": the phrasing spells the format out, so the build's token checks do not apply
    return ctx.evaluate(ctx.train(ctx.build(ratio=0, fixed_instruction="@first", token=""), **_desc_validation(ctx)),
                        seen=_fixed_seen(ctx))


def _desc_validation(ctx: Ctx) -> dict:
    """`plain` never learns the token: its model selection reads the validation phrasings with the format written
    out in place of the token (the `-desc` variant, as the test's `unseen-desc`), the same policy on the prompts
    such a model is used with."""
    v = ctx.train_fields().get("validation")
    custom = (v or {}).get("eval", {}).get("custom") or {}
    if not custom.get("instructions") or not custom.get("token_description"):
        return {}
    items = []
    for item in custom["instructions"].split(","):
        name, colon, k = item.strip().partition(":")
        items.append(name + ("" if "-" in name else "-desc") + colon + k)
    return {"validation": {"eval": {"custom": {"instructions": ",".join(items)}}}}

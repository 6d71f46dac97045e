"""`--dry-run` cost estimates: rows of work per step times the experiment's `cost:` model (seconds per row)."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

from delia.config import ConfigError
from delia.experiments.plan import Plan, Step
from delia.experiments.runner import step_done
from delia.mixing.schedule import diverse_count
from delia.training.config import effective_batch


def _size(step: Step) -> int:
    """Downstream rows behind a subset step (or a transform of one)."""
    return step.config["n"] if step.kind == "subset" else _size(step.inputs["data"])


def diverse_rows(step: Step) -> int:
    """How many of `train_rows(step)` are self-sampled rows."""
    if step.kind == "build":
        return diverse_count(step.config.get("ratio", 0), _size(step.inputs["downstream"]))[0]
    if step.kind == "transform" and step.config["name"] == "dmt_stage2":
        return diverse_rows(step.inputs["data"])
    return 0


def _sample_budget(step: Step) -> int:
    """max_new_tokens of the sample stage behind a build/transform (128 if none)."""
    for s in step.inputs.values():
        if s.kind == "sample":
            return s.config.get("max_new_tokens", 512)
        found = _sample_budget(s)
        if found:
            return found
    return 0


def train_rows(step: Step) -> int:
    """Rows of the training set a build/transform step will write."""
    if step.kind == "build":
        n = _size(step.inputs["downstream"])
        return n + diverse_count(step.config.get("ratio", 0), n)[0]
    if step.kind == "transform":
        base = train_rows(step.inputs["data"])
        if step.config["name"] == "fact_qa":
            from delia.methods.facts import FACTS

            return base + len(FACTS) * step.config.get("n_q", 10)
        if step.config["name"] == "translation_chat":
            return _size(step)
        if step.config["name"] == "dmt_stage2":
            n = _size(step.inputs["data"].inputs["downstream"])
            return base - n + max(1, round(step.config.get("k", 1 / 256) * n))
    return 0


CHARS_PER_TOKEN = 3.6  # English-like text under a BPE tokenizer (SmolLM2: langid's rows 3.4-3.9)
TEMPLATE_TOKENS = 30   # the chat template's own tokens per row (SmolLM2: system prompt and role markers)
# length-aware estimates (`cost.row_tokens` set, as `delia run` does): a general query's tokens, and the share of
# the budget that answers to general queries use (sampled and greedy: langid's run, docs/RESULTS.md)
QUERY_TOKENS = 40
REPLY_SHARE = 0.5


def _subset_of(step: Step) -> Step | None:
    """The subset step (downstream rows of a data file) behind a build / transform / subset step."""
    if step.kind == "subset":
        return step
    for name in ("downstream", "data"):
        if name in step.inputs:
            return _subset_of(step.inputs[name])
    return None


def text_tokens(chars: int) -> float:
    return chars / CHARS_PER_TOKEN


def row_tokens(step: Step, limit: int = 400) -> float | None:
    """Estimated tokens per downstream training row behind `step` (its characters, plus the chat template's),
    read from the data file the subset step names; None when it cannot be read."""
    sub = _subset_of(step)
    path = sub and sub.volatile.get("path")
    if not path:
        return None
    start, n = sub.config.get("start", 0), min(sub.config["n"], limit)
    try:
        from delia.data.sources import resolve_source

        chars, rows = 0, 0
        with open(resolve_source(path), encoding="utf-8") as f:
            for i, line in enumerate(x for x in f if x.strip()):
                if i < start:
                    continue
                if rows >= n:
                    break
                chars += _text_chars(json.loads(line))
                rows += 1
    except (OSError, ValueError, ConfigError):
        return None
    return text_tokens(chars / rows) + TEMPLATE_TOKENS if rows else None


def _text_chars(obj) -> int:
    """Characters of every string in a row (message contents, inputs, outputs), keys and ids left out."""
    if isinstance(obj, str):
        return len(obj)
    if isinstance(obj, list):
        return sum(_text_chars(x) for x in obj)
    if isinstance(obj, dict):
        return sum(_text_chars(v) for k, v in obj.items() if k not in ("id", "role", "meta", "source"))
    return 0


def gold_tokens(step: Step, limit: int = 400) -> float | None:
    """Estimated tokens of an evaluation's gold replies (the test rows' `output`), None when the rows carry none
    (halu's test rows hold a label only)."""
    path = step.run_config.get("data")
    if not path:
        return None
    try:
        from delia.data.sources import resolve_source

        lengths = []
        with open(resolve_source(path), encoding="utf-8") as f:
            for line in f:
                if len(lengths) >= limit:
                    break
                if line.strip():
                    out = json.loads(line).get("output")
                    if isinstance(out, str):
                        lengths.append(len(out))
    except (OSError, ValueError, AttributeError, ConfigError):
        return None
    return text_tokens(sum(lengths) / len(lengths)) if lengths else None


def eval_rows(step: Step) -> int:
    """Prompts an evaluation step will generate for (reads only the data and instruction files)."""
    from delia.experiments.stages import _stage_config

    config = step.run_config
    if "examples" in step.inputs:  # held-out rows are written at run time; count as many rows of the same file
        n = step.inputs["examples"].config["n"]
        config["limit"] = min(config.get("limit") or n, n)
    cfg = _stage_config("eval", config, {"adapter": Path("<adapter>")} if "adapter" in step.inputs else {},
                        Path("<out>"))
    from delia.task import get_task

    return len(get_task(cfg.task).rows(cfg))


_NEW_TOKENS = re.compile(rb'"n_new_tokens": (\d+)')
MIN_CACHED = 16  # answers a sample cache must hold before its mean length replaces the budget


def _cached_rows(path: Path) -> tuple[int, float | None]:
    """Answers in a sample cache, and their mean new tokens (None below `MIN_CACHED` answers that record it)."""
    if not path.exists():
        return 0, None
    n, tokens = 0, []
    with open(path, "rb") as f:
        for line in f:
            if line.strip():
                n += 1
                m = _NEW_TOKENS.search(line)
                if m:
                    tokens.append(int(m.group(1)))
    return n, (sum(tokens) / len(tokens) if len(tokens) >= MIN_CACHED else None)


@dataclass
class Estimate:
    per_step: dict[str, float]
    done: dict[str, bool]
    # mean new tokens per reply measured by the plan's finished evaluations, tuned (True) / base (False) models
    reply_tokens: dict[bool, float] = field(default_factory=dict)
    # per step kind: measured / modelled seconds over the plan's finished steps of that kind, and how many
    scale: dict[str, tuple[float, int]] = field(default_factory=dict)
    # per sample step: mean new tokens of the answers its cache already holds (charged instead of the budget)
    answer_tokens: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(s for k, s in self.per_step.items() if not self.done[k])

    @property
    def n_todo(self) -> int:
        return sum(not d for d in self.done.values())


def reply_tokens(plan: Plan, root: Path) -> dict[bool, float]:
    """Mean new tokens per generated reply of the plan's finished evaluations, for tuned models (True) and the base
    (False): the generation budget is only an upper bound (a tuned model stops after ~100 tokens of a 320 budget),
    so a grid in progress sizes its remaining evaluations by what its finished ones generated."""
    sums: dict[bool, list[float]] = {}
    for s in plan.steps:
        done = s.dir(root) / "done.json"
        if s.kind != "eval" or not done.exists():
            continue
        try:
            speed = json.loads(done.read_text()).get("summary", {}).get("speed", {})
        except (OSError, ValueError):
            continue
        n, tokens = speed.get("rows_generated"), speed.get("new_tokens")
        if isinstance(n, int) and n > 0 and isinstance(tokens, (int, float)):
            acc = sums.setdefault("adapter" in s.inputs, [0.0, 0.0])
            acc[0], acc[1] = acc[0] + tokens, acc[1] + n
    return {tuned: t / n for tuned, (t, n) in sums.items()}


# step kinds whose remaining steps are rescaled by what the finished ones took (drift steps pool both kinds)
SCALED = {"train": "train", "eval": "eval", "drift": "drift", "drift_answers": "drift"}


def measured_scale(plan: Plan, root: Path, modelled: dict[str, float],
                   done: dict[str, bool]) -> dict[str, tuple[float, int]]:
    """Per step kind (`SCALED`): the wall seconds the plan's finished steps recorded in `done.json`, over what the
    cost model gives them, and how many there were. A grid in progress thereby sizes its remaining training and
    evaluation by this machine, its threads and its load as they were, whatever the `cost:` model says. Steps
    without a recorded time (older runs) or modelled at under a second are skipped."""
    sums: dict[str, list[float]] = {}
    for s in plan.steps:
        kind = SCALED.get(s.kind)
        if kind is None or not done[s.key] or modelled[s.key] < 1.0:
            continue
        try:
            secs = json.loads((s.dir(root) / "done.json").read_text()).get("seconds")
        except (OSError, ValueError):
            continue
        if isinstance(secs, (int, float)) and secs > 0:
            acc = sums.setdefault(kind, [0.0, 0.0, 0])
            acc[0], acc[1], acc[2] = acc[0] + secs, acc[1] + modelled[s.key], acc[2] + 1
    return {kind: (measured / model, int(n)) for kind, (measured, model, n) in sums.items()}


def estimate(plan: Plan) -> Estimate:
    """Estimated seconds for every step (0 for the cheap data steps) and whether it is already done: the `cost:`
    model (or this machine's calibration), then rescaled per kind by the plan's finished steps (`measured_scale`)."""
    from delia.experiments.calibrate import calibrated

    c, root = calibrated(plan.exp.cost)[0], Path(plan.exp.out_dir)  # this machine's calibration, if cached
    per, done, answer_tokens = {}, {}, {}
    measured = reply_tokens(plan, root)
    for s in plan.steps:
        done[s.key] = step_done(s, root)
        if s.kind == "sample":
            cached, mean = _cached_rows(s.dir(root) / "cache.jsonl")
            todo = max(0, s.volatile["limit"] - cached)
            budget = s.config.get("max_new_tokens", 512)
            if mean is not None:  # a resumed sample: answers run as long as the cached ones, not to the budget
                answer_tokens[s.key] = mean
                budget = min(budget, mean)
            elif c.row_tokens:  # length-aware: answers to general queries end near half the budget (measured)
                budget *= REPLY_SHARE
            secs = c.model_load + todo * budget * c.sample_token if todo else 0.0
        elif s.kind == "train":
            data = s.inputs["data"]
            rows, div = train_rows(data), diverse_rows(data)
            down = c.train_row
            if c.row_tokens:  # a row costs by its length: langid's ~90-token rows are not halu's ~320
                tokens = row_tokens(data)
                down = c.train_row * tokens / c.row_tokens if tokens else c.train_row
            per_epoch = (rows - div) * down + div * c.train_diverse_row * (_sample_budget(data) or 128) / 128
            epochs = s.config.get("epochs", 1.0)
            if s.config.get("max_steps", -1) > 0:  # a step budget replaces the epochs (the data repeats as needed)
                epochs = s.config["max_steps"] * effective_batch(rows, s.config.get("batch_size")) / rows
            if s.config.get("validation"):  # early stopping: the expected share of the budget
                epochs *= c.early_stop
            secs = c.model_load + per_epoch * epochs
        elif s.kind == "eval":
            n = eval_rows(s)
            # unset = sized from the data at run time, at least the floor (256; delia.evaluation.budget)
            g = s.config.get("generation", {})
            gen = g.get("max_new_tokens") or g.get("budget_floor") or 256
            tuned = "adapter" in s.inputs
            if gen > 1 and tuned not in measured and tuned and (gold := gold_tokens(s)):
                gen = min(gen, math.ceil(gold) + 2)  # a tuned model replies in the gold format, then stops
            gen = min(gen, measured.get(tuned, gen)) if gen > 1 else gen
            factor = math.prod(c.hook_factor.get(s.config.get(h) or "", 1.0) for h in ("decoder", "prompt_hook"))
            secs = c.model_load + n * (c.score_row if gen <= 1 else gen * c.eval_token * factor)
        elif s.kind in ("drift_answers", "drift"):  # greedy answers (the base's are reused) + one scoring pass
            n, gen = s.config.get("queries", 64), s.config.get("max_new_tokens", 256)
            answers = s.kind == "drift_answers" or "adapter" in s.inputs
            score = c.score_row
            if c.row_tokens:  # length-aware: a query and its answer, not a halu row; answers end near half the budget
                score = c.score_row * (TEMPLATE_TOKENS + QUERY_TOKENS + gen) / c.row_tokens
                gen *= REPLY_SHARE
            secs = c.model_load + n * (score + (gen * c.eval_token if answers else 0))
        elif s.kind == "build":
            secs = 3.0
        else:
            secs = 0.5
        per[s.key] = secs
    scale = measured_scale(plan, root, per, done)
    for s in plan.steps:
        if not done[s.key] and SCALED.get(s.kind) in scale:
            per[s.key] *= scale[SCALED[s.kind]][0]
    return Estimate(per, done, measured, scale, answer_tokens)


def describe_step(s: Step) -> str:
    """A short human description of a step for the plan table."""
    c = s.run_config
    if s.kind == "sample":
        return f"{c.get('model')} answers {s.volatile.get('limit')} queries ({Path(c['queries']).name})"
    if s.kind == "subset":
        return f"rows {c.get('start', 0)}..{c.get('start', 0) + c['n']} of {Path(c['path']).name}"
    if s.kind == "slice":
        return f"answers to the first {c['n_queries']} queries"
    if s.kind == "build":
        fixed = ", fixed instruction" if c.get("fixed_instruction") else ""
        return f"{_size(s.inputs['downstream'])} rows + ratio {c['ratio']:g}, seed {c['seed']}{fixed}"
    if s.kind == "transform":
        return f"{c['name']} ({train_rows(s)} rows)"
    if s.kind == "train":
        extra = ", continues an adapter" if "init" in s.inputs else ""
        trl = f", trl {c['trl']}" if c.get("trl") else ""
        steps = f", {c['max_steps']} steps of {c.get('batch_size')}" if c.get("max_steps", -1) > 0 else ""
        return f"LoRA on {train_rows(s.inputs['data'])} rows, seed {c.get('seed')}{steps}{trl}{extra}"
    if s.kind == "eval":
        halu = c.get("halu", {})
        who = "adapter" if "adapter" in s.inputs else f"base (token_init {halu.get('token_init', 'random')})"
        for hook in ("prompt_hook", "decoder"):
            if c.get(hook):
                who += f", {hook} {c[hook]}"
        return f"{who} on {Path(c['data']).name} [{halu.get('instructions', 'default')}]"
    if s.kind == "drift_answers":
        return f"base answers the last {c.get('queries', 64)} queries of {Path(c['data']).name}"
    if s.kind == "drift":
        return f"{'adapter' if 'adapter' in s.inputs else 'base'} scored on the base's drift answers"
    return ""

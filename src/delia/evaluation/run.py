"""The `delia eval` stage: build prompts -> load the model -> generate (cached, resumable) -> parse -> score
-> analyse -> write metrics.json, predictions.jsonl, summary.md and plots."""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

from delia.config import save_config
from delia.data.jsonl import dumps_line
from delia.evaluation.config import EvalConfig
from delia.evaluation.generate import LOCAL, DecoderEngine, build_engine, check_engine, engine_name, generate_rows
from delia.evaluation.rows import EvalRow
from delia.files import atomic_write, write_text_atomic
from delia.task import get_task

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- 2. model


def load_for_eval(cfg: EvalConfig, rows: list[EvalRow]) -> tuple[Any, Any, dict[str, Any]]:
    """(model, tokenizer, info). Adds the special tokens the prompts use when the model lacks them."""
    from delia.models import DEFAULT_MODEL, load, model_identity
    from delia.precision import precision_of

    info: dict[str, Any] = {"model": cfg.model or DEFAULT_MODEL, "adapter": cfg.adapter}
    if cfg.adapter:
        from delia.training import load_trained, read_run_meta  # imported only when needed

        info["model"] = cfg.model or read_run_meta(cfg.adapter)["base_model"]
        model, tok = load_trained(cfg.adapter, dtype=cfg.dtype, device=cfg.device, base=cfg.model,
                                  merge=cfg.merge_adapter)
        info["identity"] = f"adapter:{Path(cfg.adapter).resolve()}@{_dir_digest(cfg.adapter)}"
    else:
        model, tok = load(cfg.model or DEFAULT_MODEL, dtype=cfg.dtype, device=cfg.device)
        info["identity"] = model_identity(cfg.model or DEFAULT_MODEL)
    precision = precision_of(model)
    # plain models keep the old names (float32, bfloat16): they are part of the generation cache's key
    info["dtype"] = precision.name if precision.autocast else str(model.dtype).replace("torch.", "")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    ensure_tokens(model, tok, prompt_tokens(cfg, rows), cfg, info)
    return model, tok, info


def prompt_tokens(cfg: EvalConfig, rows: list[EvalRow]) -> list[str]:
    """The task's special tokens that the prompts use."""
    opts = get_task(cfg.task).token_options(cfg)
    wanted = opts.tokens if opts else []
    return [t for t in wanted if any(t in m["content"] for r in rows for m in r.prompt)]


def ensure_tokens(model, tok, tokens: list[str], cfg: EvalConfig, info: dict[str, Any]) -> None:
    """Add the `tokens` the model lacks with the task's token init (recorded in `info`); 'none' leaves them
    out."""
    from delia.models import add_special_tokens

    missing = [t for t in tokens if t not in tok.get_vocab()]
    opts = get_task(cfg.task).token_options(cfg)
    if not missing or opts is None:
        return
    if opts.init == "none":
        info["tokens_as_text"] = missing
        return
    added = add_special_tokens(model, tok, missing, init=opts.init, seed=opts.seed, description=opts.description)
    info.setdefault("added_tokens", []).append(added.to_dict())
    log.info("added %s to the model (init=%s)", missing, opts.init)


def _dir_digest(path: str) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*")):
        if f.is_file() and f.suffix in (".safetensors", ".bin", ".json"):
            h.update(f.name.encode() + f.read_bytes()[:1 << 20])
    return h.hexdigest()[:16]


def _hooks():
    """The baselines' prompt hooks and decoders: plug-in registries that import their modules on first lookup."""
    from types import SimpleNamespace

    from delia.registry import registry

    return SimpleNamespace(PROMPT_HOOKS=registry("eval prompt hook"), DECODERS=registry("eval decoder"))


def _fit_prompts(model, tok, rows: list[EvalRow], cfg: EvalConfig, info: dict[str, Any],
                 max_new_tokens: int) -> list[EvalRow]:
    """Prompts over the model's context fail with FILE:LINE, or are cut (`long_prompts: truncate`)."""
    from dataclasses import replace

    from delia.lengths import guard_prompts, prompt_budget

    if tok is None:  # engine openai: no tokenizer here; the server rejects prompts over its context
        return rows
    if model is not None:
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    else:  # engine vllm: the weights are vLLM's
        from delia.lengths import context_length
        from delia.models import DEFAULT_MODEL

        context = context_length(cfg.model or DEFAULT_MODEL)
    limit = prompt_budget(cfg.max_prompt_tokens, context, max_new_tokens)
    prompts, cuts = guard_prompts(tok, [r.prompt for r in rows], [r.where or r.example_id for r in rows], limit,
                                  cfg.long_prompts)
    if cuts:
        info["prompts_cut"] = {"rows": len(cuts), "tokens": sum(cuts.values()), "limit": limit}
    return [replace(r, prompt=prompts[i]) if i in cuts else r for i, r in enumerate(rows)]


# ---------------------------------------------------------------- 3. generation (cached)


def generation_key(cfg: EvalConfig) -> tuple[Callable[[str], bool] | None, list[Any]]:
    """(stop rule, cache-key extras): the task's stop rule when `generation.stop_early`, and what else changes
    the outputs (stop settings, the task's own pieces, a decoder and its options) for the cache key."""
    task, g = get_task(cfg.task), cfg.generation
    stop_fn = task.stop_fn(cfg) if g.stop_early else None
    return stop_fn, [g.stop_early, task.cache_ident(cfg), cfg.decoder and [cfg.decoder, cfg.hook_options]]


# ---------------------------------------------------------------- 6. analyses


def analyses(model, tok, rows: list[EvalRow], cfg: EvalConfig, info: dict[str, Any]) -> dict[str, Any]:
    """Teacher-forced loss + first-token state space per set, and the concept L2 of the special token."""
    from tqdm import tqdm

    from delia.evaluation.hidden import concept_distances
    from delia.evaluation.scoring import aggregate, encode, score

    out: dict[str, Any] = {}
    a = cfg.analysis
    task = get_task(cfg.task)
    if model is None:  # a vllm / openai engine (analysis.score=on was refused before the run)
        skipped = f"engine {engine_name(cfg)} has no local weights"
        if a.hidden and task.supports("hidden_state"):
            out["hidden"] = {"skipped": skipped}
        if any(r.gold for r in rows) and a.score == "auto":
            out["scoring_skipped"] = skipped
        return out
    has_gold = any(r.gold for r in rows)
    if a.score == "on" or (a.score == "auto" and has_gold):
        todo = [r for r in rows if r.gold or a.score == "on"]
        enc = [encode(tok, r.prompt, r.gold) for r in todo]
        with tqdm(total=len(enc), desc="score", unit="row") as bar:
            scores = score(model, enc, tok.pad_token_id, a.score_batch_size, on_batch=bar.update)
        out["scoring"] = {s: aggregate([sc for r, sc in zip(todo, scores) if r.set == s])
                          for s in dict.fromkeys(r.set for r in todo)}
    if a.hidden and task.supports("hidden_state"):
        token = task.hidden_token(cfg)
        if token:
            ensure_tokens(model, tok, [token], cfg, info)  # after generation: it cannot change the outputs
        if token and token in tok.get_vocab():
            out["hidden"] = concept_distances(model, tok, token, a.concept_words, a.probe).to_dict()
        else:
            out["hidden"] = {"skipped": f"{token!r} is not in the tokenizer (token_init none)"}
    return out


# ---------------------------------------------------------------- the stage


def _clean(obj: Any) -> Any:
    """NaN -> None so metrics.json is valid JSON."""
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


def run_eval(cfg: EvalConfig) -> dict[str, Any]:
    """Evaluate `cfg.model` (+ `cfg.adapter`) on `cfg.data`; write OUT/{metrics.json, predictions.jsonl,
    summary.md, *.png, config.yaml, generations.jsonl}. The prompts are built (and the data validated) before
    OUT is created; OUT is locked while the stage runs.

    Returns:
        The metrics dict written to metrics.json.
    """
    from delia.data import DataError, Problem
    from delia.files import locked_dir

    # 1. prompts (a baseline's prompt hook may rewrite them: ICL demonstrations, DiPMT hints), before any
    # output exists: bad input fails with nothing written
    task = get_task(cfg.task)
    task.check(cfg)
    rows = task.rows(cfg)
    if cfg.prompt_hook:
        rows = _hooks().PROMPT_HOOKS.get(cfg.prompt_hook)(rows, cfg, **cfg.hook_options)
    if not rows:
        raise DataError([Problem(cfg.data, 1, "no examples to evaluate")])
    check_engine(cfg, prompt_tokens(cfg, rows))  # what the engine cannot do fails here, before OUT exists
    with locked_dir(cfg.out, "evaluation output"):  # a second `delia eval` on OUT fails at once
        return _evaluate(cfg, rows)


def _evaluate(cfg: EvalConfig, rows: list[EvalRow]) -> dict[str, Any]:
    from delia.evaluation.report import write_plots, write_summary

    out = Path(cfg.out)

    # 2. model (the local one for the default engine) and the engine that generates
    if cfg.threads:
        import torch

        torch.set_num_threads(cfg.threads)
    model, tok, info = load_for_eval(cfg, rows) if engine_name(cfg) == LOCAL else (None, None, None)
    engine, tok, info = build_engine(cfg, model, tok, info)
    if cfg.decoder:  # a baseline's decoder (language-model arithmetic) replaces batched generation
        engine = DecoderEngine(_hooks().DECODERS.get(cfg.decoder), model, tok, cfg.generation.batch_size,
                               cfg.hook_options)
    from delia.evaluation import budget as B

    # a generation budget from the data unless one is configured; the prompt-length guard leaves room for it
    task = get_task(cfg.task)
    budget = B.resolve(cfg.generation.max_new_tokens, tok, rows, task.gold_fallback(cfg),
                      cfg.generation.budget_floor)
    rows = _fit_prompts(model, tok, rows, cfg, info, budget["max_new_tokens"])  # before anything is written
    save_config(cfg, out / "config.yaml")

    # 3. generation (resumable): the task's stop rule, and what else changes the outputs joins the cache key
    stop_fn, key_extras = generation_key(cfg)
    gens, speed = generate_rows(engine, tok, rows, cfg, info, budget["max_new_tokens"], stop_fn, key_extras)

    # 4. parse and keep every prediction
    preds = [task.predict(r, g, cfg) for r, g in zip(rows, gens)]

    # 5. metrics with bootstrap intervals
    task_metrics = task.metrics(preds, cfg)
    with atomic_write(out / "predictions.jsonl") as f:
        for p in preds:
            f.write(dumps_line(_clean(p)) + "\n")

    # 6. analyses (loss, state space, hidden-state alignment)
    extra = analyses(model, tok, rows, cfg, info)

    # 7. save
    metrics = _clean({"task": cfg.task, "data": cfg.data, "model": info,
                      "n_examples": len({r.example_id for r in rows}), "n_rows": len(rows),
                      "instructions": task.instructions(cfg),
                      "budget": budget, **task_metrics, **extra, "speed": speed})
    write_text_atomic(out / "metrics.json", dumps_line(metrics, indent=2) + "\n")
    metrics["plots"] = write_plots(metrics, out)
    write_summary(metrics, out / "summary.md")
    return metrics

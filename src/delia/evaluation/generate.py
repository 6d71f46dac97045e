"""`delia eval`'s generation: which engine answers (the shared engine registry), what it cannot do (checked
before anything runs), and the cached, resumable generation of every row into OUT/generations.jsonl."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delia.config import ConfigError
from delia.evaluation.config import EvalConfig

log = logging.getLogger(__name__)

LOCAL = "transformers"  # the default engine: the model loaded here, with its adapter and added tokens
# engine options that EvalConfig fields already set, per engine: the field to use instead
_FROM_CONFIG = {"transformers": {"dtype": "dtype", "device": "device", "batch_size": "generation.batch_size",
                                 "threads": "threads"},
                "vllm": {"dtype": "dtype"}}


def engine_name(cfg: EvalConfig) -> str:
    return cfg.engine or LOCAL


def check_engine(cfg: EvalConfig, tokens: list[str]) -> None:
    """Raise ConfigError for anything the configured engine cannot do, before anything runs.

    Args:
        tokens: the special tokens the prompts use (a local model gets them added; a server cannot).
    """
    from delia.registry import RegistryError
    from delia.sampling.engines import ENGINES

    import inspect

    name = engine_name(cfg)
    try:
        cls = ENGINES.get(name)
    except RegistryError as e:
        raise ConfigError(f"engine: {e}") from None
    clash = sorted(set(cfg.engine_options or {}) & set(_FROM_CONFIG.get(name, {})))
    if clash:
        raise ConfigError(f"engine_options: {', '.join(clash)} come from the eval config: set "
                          f"{', '.join(_FROM_CONFIG[name][c] for c in clash)} instead")
    accepted = [p for p in inspect.signature(cls).parameters if p != "model" and p not in _FROM_CONFIG.get(name, {})]
    unknown = sorted(set(cfg.engine_options or {}) - set(accepted))
    if unknown:
        raise ConfigError(f"engine_options: the {name} engine takes no option(s) {', '.join(unknown)} (it takes: "
                          f"{', '.join(accepted) or 'none'})")
    if name == LOCAL:
        return
    if name == "vllm":
        try:
            import vllm  # noqa: F401  (the engine needs it right after; a missing one fails before OUT exists)
        except ImportError:
            raise ConfigError("engine: vllm needs vLLM and a GPU: pip install 'delia-tune[vllm]' (or use engine "
                              "openai against a vLLM server)") from None
    why = f"engine {name} generates outside this process (no local weights)"
    if cfg.adapter:
        raise ConfigError(f"adapter: {why}: it cannot load a training run's adapter; serve the merged model and "
                          "set model, or use engine transformers")
    if cfg.decoder:
        raise ConfigError(f"decoder: {cfg.decoder!r} combines the model's logits every step; {why}: use engine "
                          "transformers")
    if cfg.analysis.score == "on":
        raise ConfigError(f"analysis.score: teacher-forced scoring needs the weights; {why}: set it to auto or "
                          "off, or use engine transformers")
    if tokens and cfg.halu.token_init != "none":
        raise ConfigError(f"halu.token_init: the prompts use {', '.join(tokens)}; {why} and cannot add tokens to "
                          "the model: set halu.token_init=none (the text goes to the model as is; a model trained "
                          "with the token keeps it in its tokenizer), or use engine transformers")
    if name == "openai":
        if not cfg.model:
            raise ConfigError("model: engine openai needs the served model's name (model=NAME)")
        if cfg.generation.max_new_tokens is None:
            raise ConfigError("generation.max_new_tokens: engine openai has no local tokenizer to size the budget "
                              "from the data; set it")
        if cfg.max_prompt_tokens is not None or cfg.long_prompts is not None:
            raise ConfigError("max_prompt_tokens / long_prompts: engine openai has no local tokenizer to count "
                              "prompt tokens; the server rejects prompts over its context")


def build_engine(cfg: EvalConfig, model=None, tok=None, info: dict[str, Any] | None = None):
    """The engine eval generates with: the transformers engine around the model loaded here (`model`, `tok`,
    `info` from `load_for_eval`), or a vllm / openai engine built from `cfg.model` and `engine_options`.

    Returns:
        (engine, tokenizer or None, info): info holds `engine`, `identity` and `dtype` (cache key parts).
    """
    from delia.models import DEFAULT_MODEL
    from delia.sampling.engines import EngineError, make_engine

    name, opts = engine_name(cfg), dict(cfg.engine_options or {})
    try:
        if name == LOCAL:
            engine = make_engine(LOCAL, info["model"], batch_size=cfg.generation.batch_size, **opts)
            return engine.attach(model, tok), tok, info
        if name == "vllm":
            opts["dtype"] = cfg.dtype
        engine = make_engine(name, cfg.model or DEFAULT_MODEL, **opts)
    except EngineError as e:
        raise ConfigError(f"engine_options: {e}") from None
    identity = engine.identity()
    info = {"model": cfg.model or DEFAULT_MODEL, "adapter": None, "engine": name, "dtype": opts.get("dtype"),
            # the engine's name joins the identity so no other engine's rows are mistaken for these
            "identity": identity if identity.startswith(f"{name}:") else f"{name}:{identity}"}
    if name == "openai":
        return engine, None, info
    from delia.models import load_tokenizer

    return engine, load_tokenizer(cfg.model or DEFAULT_MODEL), info


@dataclass
class DecoderEngine:
    """A baseline's decoder (`delia.methods.hooks.DECODERS`, e.g. language-model arithmetic) as an engine over
    the local model: `fn(model, tok, prompts, params, batch_size, stop_fn, on_batch, **options)`."""

    fn: Callable
    model: Any
    tok: Any
    batch_size: int
    options: dict[str, Any]

    def generate(self, prompts, params, on_batch=None, stop_fn=None) -> list:
        return self.fn(self.model, self.tok, prompts, params, batch_size=self.batch_size, stop_fn=stop_fn,
                       on_batch=on_batch, **self.options)


def generate_rows(engine, tok, rows: list, cfg: EvalConfig, info: dict[str, Any], max_new_tokens: int,
                  stop_fn: Callable[[str], bool] | None, key_extras: list[Any]) -> tuple[list, dict]:
    """Generations for all rows with `max_new_tokens` each, reusing OUT/generations.jsonl; returns
    (generations, speed).

    A row's cache key is sha256(identity + rendered prompt), the identity being the JSON list [model identity,
    added tokens, dtype, decoding params, *key_extras] (the keys of caches written before engines came to eval).

    Args:
        engine: anything with `generate(prompts, params, on_batch=None, stop_fn=None)` (an engine, a decoder).
        tok: the tokenizer that renders chat prompts for the key (None: the messages' JSON, engine openai).
        stop_fn: the task's stop rule (None: stop at EOS / the budget only).
        key_extras: what else changes the outputs (stop rule settings, the decoder and its options).
    """
    from tqdm import tqdm

    from delia.data.jsonl import dumps_line
    from delia.gencache import GenerationCache
    from delia.generation import GenParams, Generation, render_prompt
    from delia.sampling.engines import EngineError, RowsFailed

    g = cfg.generation
    params = GenParams(max_new_tokens=max_new_tokens, temperature=g.temperature, top_p=g.top_p, seed=cfg.seed)
    ident = json.dumps([info["identity"], info.get("added_tokens"), info["dtype"], params.__dict__, *key_extras],
                       sort_keys=True, default=str)
    keys = [hashlib.sha256((ident + (render_prompt(tok, r.prompt) if tok is not None else dumps_line(r.prompt))
                            ).encode()).hexdigest() for r in rows]
    cache_path = Path(cfg.out) / "generations.jsonl"
    if not cfg.resume:
        cache_path.unlink(missing_ok=True)
    store = GenerationCache(cache_path, busy="another `delia eval` is writing this output", required=("text",),
                            bad_rows="skip", keep_rows=True)
    store.open()
    cache: dict[str, Generation] = {}
    for key, d in store.rows_by_key.items():
        try:
            cache[key] = Generation(**{k: v for k, v in d.items() if k != "key"})
        except TypeError:  # a row of another layout: that row is generated again
            log.warning("%s: row %s... is not a generation row (unexpected keys); it is generated again",
                        cache_path, key[:12])
    todo = [i for i, k in enumerate(keys) if k not in cache]
    bar = tqdm(total=len(todo), desc="generate", unit="row", disable=not todo)
    t0, tokens = time.perf_counter(), 0

    def on_batch(idx: list[int], gens: list) -> None:
        nonlocal tokens
        store.append([{"key": keys[todo[j]], **gen.__dict__} for j, gen in zip(idx, gens)])
        for j, gen in zip(idx, gens):
            cache[keys[todo[j]]] = gen
        tokens += sum(x.n_new_tokens for x in gens)
        bar.update(len(gens))
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - t0, 1e-9):.1f}")

    try:
        if todo:
            log.info("%d of %d rows to generate (%d cached)", len(todo), len(rows), len(rows) - len(todo))
            engine.generate([rows[i].prompt for i in todo], params, on_batch=on_batch, stop_fn=stop_fn)
    except RowsFailed as e:  # the answered rows are in the cache; a rerun retries only the failed ones
        first = next(iter(e.failed))
        where = rows[todo[first]].where or rows[todo[first]].example_id
        raise EngineError(f"{len(e.failed)} of {len(todo)} rows got no answer (first: {where}: {e.failed[first]}); "
                          f"the {len(todo) - len(e.failed)} answered are kept in {cache_path}: rerun to retry the "
                          "others") from None
    finally:
        store.close()
        bar.close()
    secs = time.perf_counter() - t0
    speed = {"rows_generated": len(todo), "rows_cached": len(rows) - len(todo), "seconds": round(secs, 2),
             # one prompt = one example under one instruction; examples_per_s is the same number (kept by name
             # for readers of metrics.json such as delia.experiments)
             "prompts_per_s": len(todo) / secs if todo else None,
             "examples_per_s": len(todo) / secs if todo else None,
             "new_tokens_per_s": tokens / secs if todo else None, "new_tokens": tokens,
             "batch_size": g.batch_size, "dtype": info["dtype"], "engine": engine_name(cfg)}
    return [cache[k] for k in keys], speed

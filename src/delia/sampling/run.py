"""`run_sample`: the self-sampling stage, top to bottom (queries -> engine -> resumable cache -> summary)."""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from delia.config import opt
from delia.data.jsonl import dumps_line, read_text_lines
from delia.data.records import DataError, FieldError, Problem
from delia.files import write_text_atomic
from delia.generation import Generation, GenParams
from delia.models import DEFAULT_MODEL
from delia.sampling.cache import SampleCache, cache_key
from delia.sampling.prompts import Query, query_of, sample_prompt, sample_row
from delia.sampling.self_queries import SelfQueryConfig, self_queries

log = logging.getLogger(__name__)


@dataclass
class SampleConfig:
    """The `delia sample` stage: which model answers which queries, how, and where the rows go."""

    out: str = opt("", help="Cache file (JSONL) to append rows to; reruns resume from it.")
    model: str = opt(DEFAULT_MODEL, help="Model name/path (transformers, vllm) or served model name (openai).")
    queries: str | None = opt(None, help="Query file (Alpaca, messages, query/response, prompt/completion).")
    self_queries: int | None = opt(None, help="Make the model write this many queries itself (Magpie) instead.")
    limit: int | None = opt(None, help="Answer only the first N queries.")
    engine: str = opt("transformers", help="transformers | vllm | openai (see `delia ls engines`).")
    engine_options: dict[str, Any] = opt({}, help="Engine constructor options (batch_size, dtype, base_url, ...).")
    max_new_tokens: int = opt(512, help="Token budget per answer (paper: 512).")
    temperature: float = opt(0.7, help="Sampling temperature (paper: 0.7).")
    top_p: float = opt(0.95, help="Nucleus sampling mass (paper: 0.95).")
    seed: int = opt(0, help="Sampling seed (part of each row's cache key).")
    one_shot: bool = opt(True, help="Show the reference answer as a one-shot demo when a query has one.")
    self_query: SelfQueryConfig = field(default_factory=SelfQueryConfig, metadata={"help": "Magpie settings."})
    max_prompt_tokens: int | None = opt(None, help="Longest prompt in tokens (default: the model's context minus "
                                                   "max_new_tokens); transformers and vllm engines.")
    long_prompts: str | None = opt(None, help="A prompt over the limit: error (default, names FILE:LINE) | "
                                              "truncate (cut the middle of its longest turn).")

    def __post_init__(self) -> None:
        if not self.out:
            raise ValueError("out: the cache file is required (--out CACHE.jsonl)")
        if (self.queries is None) == (self.self_queries is None):
            raise ValueError("give exactly one of queries (--queries FILE) or self_queries (--self-queries N)")
        for name in ("limit", "self_queries"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.max_new_tokens < 1 or self.temperature < 0 or not 0 < self.top_p <= 1:
            raise ValueError("max_new_tokens must be >= 1, temperature >= 0 and 0 < top_p <= 1")
        if self.long_prompts not in (None, "error", "truncate"):
            raise ValueError(f"long_prompts: {self.long_prompts!r} is not one of error, truncate")
        if self.max_prompt_tokens is not None and self.max_prompt_tokens < 1:
            raise ValueError(f"max_prompt_tokens must be >= 1, got {self.max_prompt_tokens}")

    def params(self) -> dict[str, Any]:
        """The sampling parameters recorded in every row and hashed into its key."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature, "top_p": self.top_p,
                "one_shot": self.one_shot}


@dataclass
class SampleSummary:
    """What a run did. `done` rows were written now; `skipped` were in the cache already.

    `seconds` is the whole run (model load included); `generate_seconds` the generation alone.
    """

    total: int = 0
    done: int = 0
    skipped: int = 0
    duplicates: int = 0
    failed: int = 0
    empty: int = 0
    truncated: int = 0
    new_tokens: int = 0
    seconds: float = 0.0
    generate_seconds: float = 0.0
    failures: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SampleInterrupted(KeyboardInterrupt):
    """An interrupted `run_sample`: every answer received is in the cache; `summary` says how far it got."""

    def __init__(self, summary: SampleSummary, out: str) -> None:
        self.summary = summary
        s = summary
        left = s.total - s.duplicates - s.skipped - s.done
        super().__init__(f"interrupted: {s.done} new answer(s) kept in {out} ({s.skipped + s.done} of "
                         f"{s.total - s.duplicates} queries answered), {left} not sent; rerun the same command "
                         f"to resume")


def load_queries(path: str | Path, limit: int | None = None) -> list[Query]:
    """Queries from any supported file; every bad row is reported as FILE:LINE: field: reason."""
    from delia.data import read_records

    records = read_records(path)
    queries, problems = [], []
    for rec in records[:limit] if limit else records:
        try:
            queries.append(query_of(rec))
        except FieldError as e:
            problems.append(Problem(str(path), rec.line or 0, e.reason, e.field))
    if problems:
        raise DataError(problems)
    return queries


def _self_query_list(cfg: SampleConfig, engine) -> list[Query]:
    """Magpie queries, saved beside the cache so a resumed run answers the same ones."""
    path = Path(cfg.out).with_suffix(".queries.jsonl")
    saved = [json.loads(line) for line in read_text_lines(path) if line.strip()] if path.exists() else []
    if len(saved) < cfg.self_queries:
        texts = self_queries(engine, cfg.self_queries, cfg.self_query, seed=cfg.seed)
        saved = [{"id": f"self-{i:06d}", "query": t} for i, t in enumerate(texts)]
        write_text_atomic(path, "".join(dumps_line(r) + "\n" for r in saved))
        log.info("wrote %d self-written queries to %s", len(saved), path)
    return [Query(r["id"], r["query"]) for r in saved[:cfg.self_queries]]


def run_sample(cfg: SampleConfig, engine=None, progress: bool = True) -> SampleSummary:
    """Answer every query not yet in the cache and append the rows, batch by batch.

    Args:
        cfg: the stage config.
        engine: an engine to use instead of building `cfg.engine` (tests, reuse across calls).
        progress: show a progress bar (rows/s, tokens/s, ETA) on stderr.
    Returns:
        The run's SampleSummary.
    """
    from delia.sampling.engines import RowsFailed, make_engine

    t0 = time.perf_counter()
    # 1. queries (read and validated before the model loads, so bad input fails fast)
    queries = load_queries(cfg.queries, cfg.limit) if cfg.queries else None
    build_engine = engine is None
    engine = engine or make_engine(cfg.engine, cfg.model, **cfg.engine_options)
    if queries is None:
        queries = _self_query_list(cfg, engine)

    # 2. keys: content hashes; a query repeated in the file is answered once
    identity, params = engine.identity(), cfg.params()
    keyed: dict[str, Query] = {}
    for q in queries:
        keyed.setdefault(cache_key(q.text, q.reference if cfg.one_shot else None, identity, params, cfg.seed), q)
    summary = SampleSummary(total=len(queries), duplicates=len(queries) - len(keyed))
    # prompts over the model's context fail (or are cut) here, before the cache opens or the model loads
    cut = _guard(cfg, list(keyed.items())) if build_engine and cfg.engine != "openai" else {}

    with SampleCache(cfg.out) as cache:
        todo = [(k, q) for k, q in keyed.items() if k not in cache.keys]
        summary.skipped = len(keyed) - len(todo)
        log.info("%d queries, %d already in %s, %d to do", len(queries), summary.skipped, cfg.out, len(todo))
        gen_params = GenParams(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
                               seed=cfg.seed)

        # 3. generate; each finished batch is appended (and fsynced) before the next one starts
        with _Progress(len(todo), enabled=progress and bool(todo)) as bar:
            def on_batch(idx: list[int], gens: list[Generation]) -> None:
                rows = [sample_row(todo[i][1], todo[i][0], g, identity, params, engine.name,
                                   cfg.seed)
                        for i, g in zip(idx, gens)]
                for i, row in zip(idx, rows):
                    if todo[i][0] in cut:  # the row holds the query as the model saw it
                        prompt, n = cut[todo[i][0]]
                        row["messages"][0]["content"] = prompt[-1]["content"]
                        row["meta"]["prompt_tokens_cut"] = n
                cache.append(rows)
                summary.done += len(rows)
                summary.empty += sum(not g.text.strip() for g in gens)
                summary.truncated += sum(g.finish_reason == "length" for g in gens)
                summary.new_tokens += sum(g.n_new_tokens for g in gens)
                bar.advance(len(rows), sum(g.n_new_tokens for g in gens))

            t_gen = time.perf_counter()
            try:
                engine.generate([cut[k][0] if k in cut else sample_prompt(q, cfg.one_shot) for k, q in todo],
                                gen_params, on_batch=on_batch)
            except RowsFailed as e:  # the other rows are in the cache; failed ones are retried on the next run
                summary.failed = len(e.failed)
                summary.failures = {todo[i][1].id: reason for i, reason in e.failed.items()}
                log.warning("%s", e)
            except KeyboardInterrupt:  # the engine passed every answer received to on_batch: it is in the cache
                raise SampleInterrupted(summary, cfg.out) from None
            summary.generate_seconds = time.perf_counter() - t_gen
    summary.seconds = time.perf_counter() - t0
    return summary


def _guard(cfg: SampleConfig, keyed: list[tuple[str, Query]]) -> dict[str, tuple[list, int]]:
    """key -> (prompt cut to fit, tokens cut) for the prompts over the limit; raises DataError in error mode."""
    from delia.lengths import context_length, guard_prompts, prompt_budget
    from delia.models import load_tokenizer

    limit = prompt_budget(cfg.max_prompt_tokens, context_length(cfg.model), cfg.max_new_tokens)
    if limit is None or not keyed:
        return {}
    prompts, cuts = guard_prompts(load_tokenizer(cfg.model), [sample_prompt(q, cfg.one_shot) for _, q in keyed],
                                  [q.where or q.id for _, q in keyed], limit, cfg.long_prompts)
    return {keyed[i][0]: (prompts[i], n) for i, n in cuts.items()}


class _Progress:
    """A rich progress bar with rows/s, tokens/s and ETA (a no-op when disabled). When stderr is not a terminal
    (a log file, `nohup`, CI) rich draws nothing until the end, so a plain line is printed every `every` s."""

    def __init__(self, total: int, enabled: bool = True, every: float = 30.0) -> None:
        self.total, self.enabled, self.tokens, self.rows, self.every = total, enabled, 0, 0, every

    def __enter__(self) -> _Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.t0 = self.last = time.perf_counter()
            self.console = Console(stderr=True)
            self.bar = Progress(TextColumn("sampling"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                console=self.console, disable=not self.console.is_terminal)
            self.bar.start()
            self.task = self.bar.add_task("sample", total=self.total, rate="")
        return self

    def line(self) -> str:
        """'sampling 120/912 rows, 0.81 rows/s, 95.2 tok/s, ETA 16m18s' (plain text, for logs)."""
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rate = self.rows / dt
        eta = (self.total - self.rows) / rate if rate > 0 else float("nan")
        eta_s = f"{int(eta // 60)}m{int(eta % 60):02d}s" if eta == eta else "?"
        return (f"sampling {self.rows}/{self.total} rows, {rate:.2f} rows/s, {self.tokens / dt:.1f} tok/s, "
                f"ETA {eta_s}")

    def advance(self, rows: int, tokens: int) -> None:
        self.rows += rows
        self.tokens += tokens
        if self.enabled:
            dt = max(time.perf_counter() - self.t0, 1e-9)
            self.bar.update(self.task, advance=rows,
                            rate=f"{self.rows / dt:.2f} rows/s {self.tokens / dt:.1f} tok/s")
            if not self.console.is_terminal and time.perf_counter() - self.last >= self.every:
                self.last = time.perf_counter()
                print(self.line(), file=sys.stderr, flush=True)

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.bar.stop()
            if not self.console.is_terminal:
                print(self.line(), file=sys.stderr, flush=True)

"""`delia diversify`: N distinct instruction variants that refer to the format only through the token.

Diversifiers live in `registry("diversifier")`. Each entry is a factory `(cfg, seeds, complete) -> propose`
where `propose(round, kept) -> (candidates, problems)`; the stage filters the candidates (token count,
length, near-duplicates) round after round until N are kept, then writes the list and a report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from delia.config import DEFAULT_TOKEN, ConfigError, opt, to_dict
from delia.data import DataError, Problem, read_lines
from delia.data.jsonl import dumps_line, read_text_lines
from delia.data.sources import resolve_source
from delia.errors import UserError
from delia.files import write_text_atomic
from delia.diversify.grammar import grammar_propose
from delia.diversify.llm import Complete, engine_complete, llm_propose
from delia.diversify.text import FilterConfig, diversity_stats, filter_variants
from delia.diversify.tokens import check_special_token, substitute_format
from delia.registry import registry

log = logging.getLogger(__name__)

DIVERSIFIERS = registry("diversifier")
Propose = Callable[[int, list[str]], tuple[list[str], list[tuple[str, str]]]]


@dataclass
class LLMConfig:
    """How to reach the paraphrasing model (the `llm` diversifier only)."""

    engine: str = opt("openai", help="Engine name (see `delia ls engines`); the paper used GPT-4 through openai.")
    model: str = opt("gpt-4o", help="Model name the engine serves.")
    base_url: str = opt("https://api.openai.com/v1", help="OpenAI-compatible API root (openai engine).")
    api_key_env: str = opt("OPENAI_API_KEY", help="Environment variable holding the API key (openai engine).")
    per_request: int = opt(20, help="Variants asked for in one request.")
    requests_per_round: int = opt(3, help="Requests sent together per round (each shows other seeds).")
    max_rounds: int = opt(10, help="Give up after this many rounds without reaching n.")
    temperature: float = opt(1.0, help="Sampling temperature.")
    top_p: float = opt(0.95, help="Nucleus sampling.")
    max_new_tokens: int = opt(2048, help="Reply budget per request.")
    options: dict[str, Any] = opt({}, help="Extra engine constructor options (e.g. concurrency, timeout).")

    def __post_init__(self) -> None:
        if self.per_request < 1 or self.requests_per_round < 1 or self.max_rounds < 1:
            raise ConfigError("llm.per_request, llm.requests_per_round and llm.max_rounds must be >= 1")


@dataclass
class DiversifyConfig:
    """Make N instruction variants containing the special token."""

    out: str = opt(help="Output file: one instruction per line (a <stem>.report.json is written beside it).")
    method: str = opt("grammar", help="Diversifier: grammar (offline, deterministic) or llm.")
    n: int = opt(60, help="Variants to keep (the paper used 60).")
    token: str = opt(DEFAULT_TOKEN, help="Special token standing for the output format.")
    seeds: str | None = opt(None, help="File of seed instructions (one per line, each containing the token).")
    task: list[str] = opt([], help="Task text(s). grammar: clauses like 'decide whether ...'; llm: a task "
                                   "description (with format_text, which is replaced by the token).")
    format_text: str | None = opt(None, help="Format description inside `task` to replace by the token.")
    min_count: int = opt(1, help="Fewest times a variant must contain the token.")
    max_count: int = opt(2, help="Most times a variant may contain the token.")
    min_chars: int = opt(15, help="Shortest variant kept (characters).")
    max_chars: int = opt(400, help="Longest variant kept (characters).")
    max_similarity: float = opt(0.85, help="Near-duplicate threshold: reject a variant this similar to a kept one.")
    similarity: Literal["ratio", "jaccard"] = opt("ratio", help="ratio: difflib over words; jaccard: word 1-2-grams.")
    seed: int = opt(0, help="Seed for the grammar order and the LLM requests.")
    tokenizer_model: str = opt("smollm2-135m-instruct", help="Model whose tokenizer checks the token ('' skips).")
    llm: LLMConfig = field(default_factory=LLMConfig, metadata={"help": "LLM settings (method llm only)."})

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if not self.token or self.token != self.token.strip():
            raise ConfigError(f"token must be non-empty without surrounding spaces, got {self.token!r}")
        if not 1 <= self.min_count <= self.max_count:
            raise ConfigError(f"need 1 <= min_count <= max_count, got {self.min_count}, {self.max_count}")
        if not 0 < self.max_similarity <= 1:
            raise ConfigError(f"max_similarity must be in (0, 1], got {self.max_similarity}")
        if not self.seeds and not self.task:
            raise ConfigError("give seed instructions (seeds) or a task text (task)")


class DiversifyError(UserError, RuntimeError):
    """Fewer variants than asked for survived the filters; the report lists every rejection."""


@dataclass
class DiversifyResult:
    """What `run_diversify` kept, rejected (with reasons) and measured."""

    variants: list[str]
    rejected: list[tuple[str, str]] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)
    token_check: dict[str, Any] | None = None
    rounds: int = 0
    unused: int = 0  # candidates left unexamined once n were kept


def load_seeds(cfg: DiversifyConfig) -> list[str]:
    """Seed instructions: the seeds file (every line must contain the token) plus the task texts with the
    format text replaced by the token."""
    seeds: list[str] = []
    if cfg.seeds:
        lines = read_lines(cfg.seeds)
        raw = read_text_lines(resolve_source(cfg.seeds))
        numbers = [i for i, ln in enumerate(raw, 1) if ln.strip()]
        problems = [Problem(cfg.seeds, ln, f"seed instruction does not contain {cfg.token}")
                    for ln, s in zip(numbers, lines) if cfg.token not in s]
        if problems:
            raise DataError(problems)
        seeds += lines
    for i, task in enumerate(cfg.task):
        try:
            seeds.append(substitute_format(task, cfg.format_text, cfg.token, f"task[{i}]") if cfg.format_text
                         else task)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return seeds


@DIVERSIFIERS.register("grammar", help="Offline combinatorial grammar (verbs x frames x format clauses); "
                                       "deterministic for a seed")
def make_grammar(cfg: DiversifyConfig, seeds: list[str], complete: Complete | None = None) -> Propose:
    if not cfg.task:
        raise ConfigError("the grammar diversifier needs task clause(s) (task: 'decide whether ...'); "
                          "seed instructions alone are for the llm diversifier")
    if cfg.format_text:
        raise ConfigError("the grammar adds the format clause itself: give task clauses without format_text")
    candidates = grammar_propose(cfg.task, cfg.token, cfg.seed)
    return lambda round_, kept: (candidates if round_ == 0 else [], [])


@DIVERSIFIERS.register("llm", help="Paraphrases from an LLM through an engine (openai-compatible: GPT-4, local)")
def make_llm(cfg: DiversifyConfig, seeds: list[str], complete: Complete | None = None) -> Propose:
    from delia.generation import GenParams

    c = cfg.llm
    complete = complete or engine_complete(
        c.engine, c.model, {"base_url": c.base_url, "api_key_env": c.api_key_env, **c.options}
        if c.engine == "openai" else dict(c.options))
    params = GenParams(max_new_tokens=c.max_new_tokens, temperature=c.temperature, top_p=c.top_p, seed=cfg.seed)
    return lambda round_, kept: llm_propose(complete, seeds, cfg.token, c.per_request, c.requests_per_round,
                                            params, round_, kept, cfg.min_count, cfg.max_count)


def run_diversify(cfg: DiversifyConfig, complete: Complete | None = None, tokenizer=None) -> DiversifyResult:
    """Make, filter, check and write `cfg.n` variants.

    Args:
        cfg: the stage config.
        complete: the LLM callable (tests pass a fake); default: built from `cfg.llm`.
        tokenizer: tokenizer for the token check; default: loaded from `cfg.tokenizer_model` ('' skips).
    Returns:
        The kept variants, every rejected candidate with its reason, diversity statistics and the token check.
    Raises:
        DiversifyError: when fewer than n variants survive (the report is still written).
    """
    # Load seeds and the diversifier.
    seeds = load_seeds(cfg)
    propose = DIVERSIFIERS.get(cfg.method)(cfg, seeds, complete)
    fcfg = FilterConfig(cfg.token, cfg.min_count, cfg.max_count, cfg.min_chars, cfg.max_chars,
                        cfg.max_similarity, cfg.similarity)

    # Propose and filter, round after round.
    kept: list[str] = []
    result = DiversifyResult(variants=kept)
    max_rounds = cfg.llm.max_rounds if cfg.method == "llm" else 1
    for round_ in range(max_rounds):
        candidates, problems = propose(round_, list(kept))
        result.rejected += [(t, f"unparsable reply: {r}") for t, r in problems]
        before = len(kept)
        _, rejected = filter_variants(candidates, fcfg, kept, limit=cfg.n)
        result.rejected += rejected
        result.unused += len(candidates) - len(rejected) - (len(kept) - before)
        result.rounds = round_ + 1
        log.info("round %d: %d candidates, %d kept so far", round_, len(candidates), len(kept))
        if len(kept) >= cfg.n or not candidates:
            break

    # Measure and check the token with the target tokenizer.
    result.stats = diversity_stats(kept, cfg.token, cfg.similarity) if kept else {"n": 0}
    if tokenizer is None and cfg.tokenizer_model:
        from delia.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer_model)
    if tokenizer is not None:
        result.token_check = check_special_token(tokenizer, cfg.token, kept, cfg.tokenizer_model).to_dict()

    # Write the list and the report (also when short, so the rejections can be read).
    out = Path(cfg.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(out, "".join(v + "\n" for v in kept))
    report = {"config": to_dict(cfg), "kept": len(kept), "rounds": result.rounds,
              "unused_candidates": result.unused, "stats": result.stats,
              "token_check": result.token_check,
              "rejected": [{"text": t, "reason": r} for t, r in result.rejected]}
    write_text_atomic(report_path(cfg.out), dumps_line(report, indent=2) + "\n")
    if len(kept) < cfg.n:
        raise DiversifyError(f"only {len(kept)} of {cfg.n} variants survived the filters after {result.rounds} "
                           f"round(s); see {report_path(cfg.out)} for every rejection and its reason")
    return result


def report_path(out: str | Path) -> Path:
    """`<out stem>.report.json` beside the instruction list."""
    p = Path(out)
    return p.with_name(p.stem + ".report.json")

"""What tuning cost: how far a tuned model drifted from its base model on general queries (beyond the paper).

Two stages, so every model is measured against the same reference:
- `run_drift_answers`: the base model answers the LAST `queries` rows of a query file greedily (the first rows
  feed self-sampling, so the two never overlap) -> answers.jsonl, plus the base's NLL of its own answers.
- `run_drift`: any model (the base, a trained adapter) -> the mean per-token NLL of the base's answers under
  that model, teacher-forced (`scoring.score`: reply tokens and the end-of-turn marker, token-weighted), and the
  model's own greedy answers with their rate of task-format leakage (`leaks`) -> drift.jsonl (per query, for a
  report's bootstrap) and metrics.json (`drift_nll`, `drift_nll_base`, `leak_rate`, `drift_n`).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from delia.config import ConfigError, opt, save_config
from delia.evaluation.parsing import parse_output

log = logging.getLogger(__name__)
ANSWERS = "answers.jsonl"


@dataclass
class DriftConfig:
    """One drift stage: the base's reference answers (`answers` unset) or one model scored against them."""

    out: str = opt("", help="output directory")
    data: str = opt("builtin:diverse/alpaca_5000", help="general queries (any query format); the LAST `queries` "
                                                        "rows are used, so self-sampling from the first rows never "
                                                        "sees them")
    queries: int = opt(64, help="how many held-out queries (the last rows of `data`)")
    answers: str | None = opt(None, help="the base model's answers (answers.jsonl of a reference run); unset = "
                                         "this run writes them with `model`")
    model: str | None = opt(None, help="base model name or path (default: the adapter's recorded base, else the "
                                       "embedded smollm2-135m-instruct)")
    adapter: str | None = opt(None, help="training run directory (delia train --out) to load on top")
    merge_adapter: bool = opt(True, help="merge the adapter into the weights (faster generation)")
    dtype: str = opt("auto", help="auto | fp32 | bf16 | fp16")
    device: str = opt("cpu", help="torch device")
    threads: int | None = opt(None, help="torch CPU threads")
    max_new_tokens: int = opt(256, help="greedy answer budget (base answers and the model's own answers)")
    batch_size: int = opt(16, help="prompts per generation batch")
    score_batch_size: int = opt(4, help="rows per teacher-forced scoring pass")
    keys: list[str] = opt(["thought", "hallucination"], help="the task's reply keys, for the leakage rule "
                                                             "(empty: no leakage rule, leak_rate null)")

    def __post_init__(self) -> None:
        if not self.out:
            raise ConfigError("out: an output directory is required")
        for name in ("queries", "max_new_tokens", "batch_size", "score_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.threads is not None and self.threads < 1:
            raise ConfigError("threads must be >= 1")


def leaks(text: str, keys: Sequence[str]) -> bool:
    """Task-format leakage: a reply to a general query that carries the tuned task's format.

    True when the reply starts with `{'KEY'` or `{"KEY"` for the task's first key (e.g. `{'thought'`), or when
    its first `{...}` object parses (`parsing.parse_output`) as a dict holding every task key. Never True when
    `keys` is empty (a task without a reply format).
    """
    if not keys:
        return False
    if re.match(r"""\{\s*(['"])""" + re.escape(keys[0]) + r"\1", text.lstrip()):
        return True
    p = parse_output(text)
    return p.ok and isinstance(p.value, dict) and all(k in p.value for k in keys)


def heldout_queries(path: str, n: int) -> list[dict[str, Any]]:
    """The last `n` rows of a query file as {id, row (1-based), prompt (chat messages ending in a user turn)}."""
    from delia.data import DataError, Problem, read_records

    records = read_records(path)
    if n > len(records):
        raise ConfigError(f"{path}: {n} drift queries asked for, but the file has {len(records)} rows")
    start = len(records) - n
    out, problems = [], []
    for i, rec in enumerate(records[start:], start + 1):
        prompt = rec.prompt_messages
        if not prompt or prompt[-1]["role"] != "user" or not prompt[-1]["content"].strip():
            problems.append(Problem(rec.source or str(path), rec.line or i, "a drift query must end in a non-empty "
                                                                             "user turn", "messages"))
            continue
        out.append({"id": rec.id, "row": i, "prompt": prompt})
    if problems:
        raise DataError(problems)
    return out


def first_heldout_row(path: str, n: int) -> int:
    """0-based index of the first row `heldout_queries(path, n)` takes (the plan checks sampling stays below)."""
    from delia.data import read_records

    return len(read_records(path)) - n


# ---------------------------------------------------------------- model, generation, scoring


def _load(cfg: DriftConfig):
    """(model, tokenizer, identity) for the base model or a trained run."""
    import torch

    from delia.models import DEFAULT_MODEL, load, model_identity

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if cfg.adapter:
        from delia.training import load_trained  # imported only when needed (as in evaluation.run)

        model, tok = load_trained(cfg.adapter, dtype=cfg.dtype, device=cfg.device, base=cfg.model,
                                  merge=cfg.merge_adapter)
        ident = f"adapter:{Path(cfg.adapter).resolve()}"
    else:
        model, tok = load(cfg.model or DEFAULT_MODEL, dtype=cfg.dtype, device=cfg.device)
        ident = model_identity(cfg.model or DEFAULT_MODEL)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, tok, ident


def _answer(model, tok, prompts: list[list[dict[str, str]]], cfg: DriftConfig) -> list:
    """Greedy answers through the shared generation engine (no stop rule but end of turn)."""
    from delia.generation import GenParams, generate

    return generate(model, tok, prompts, GenParams(max_new_tokens=cfg.max_new_tokens, temperature=0.0),
                    batch_size=cfg.batch_size)


def _nll(model, tok, prompts: list[list[dict[str, str]]], answers: list[str], cfg: DriftConfig) -> list[tuple]:
    """(nll_sum, n_tokens) of each answer under `model`, teacher-forced after its prompt."""
    from delia.evaluation.scoring import encode, score

    rows = [encode(tok, p, a) for p, a in zip(prompts, answers)]
    return [(s.nll_sum, s.n_tokens) for s in score(model, rows, tok.pad_token_id, cfg.score_batch_size)]


def _mean(pairs: Sequence[tuple[float, int]]) -> float | None:
    tokens = sum(n for _, n in pairs)
    return sum(s for s, _ in pairs) / tokens if tokens else None


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


# ---------------------------------------------------------------- the stages


def run_drift_answers(cfg: DriftConfig) -> dict[str, Any]:
    """The base model's greedy answers to the held-out queries, and its NLL of them.

    Returns:
        The metrics written to OUT/metrics.json (`nll`, `leak_rate`, `n`, finish reasons).
    """
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    queries = heldout_queries(cfg.data, cfg.queries)
    model, tok, ident = _load(cfg)
    prompts = [q["prompt"] for q in queries]
    gens = _answer(model, tok, prompts, cfg)
    nll = _nll(model, tok, prompts, [g.text for g in gens], cfg)
    rows = [{**q, "answer": g.text, "finish_reason": g.finish_reason, "n_new_tokens": g.n_new_tokens,
             "nll_sum": s, "n_tokens": n, "leak": leaks(g.text, cfg.keys)} for q, g, (s, n) in zip(queries, gens, nll)]
    _write_jsonl(out / ANSWERS, rows)
    metrics = {"model": ident, "dtype": str(model.dtype), "max_new_tokens": cfg.max_new_tokens, "data": cfg.data,
               "n": len(rows), "nll": _mean(nll),
               "leak_rate": sum(r["leak"] for r in rows) / len(rows) if cfg.keys else None,
               "finish_reasons": dict(Counter(g.finish_reason for g in gens))}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _read_answers(path: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The reference answers and the reference run's metrics (beside them)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"answers: {p} not found (run the base model's drift answers first)")
    rows = [json.loads(line) for line in p.read_text(encoding="utf-8").splitlines() if line.strip()]
    meta = p.with_name("metrics.json")
    return rows, json.loads(meta.read_text()) if meta.is_file() else {}


def run_drift(cfg: DriftConfig) -> dict[str, Any]:
    """Score one model against the base's answers (`cfg.answers`); see the module doc.

    Returns:
        The metrics written to OUT/metrics.json.
    """
    if not cfg.answers:
        raise ConfigError("answers: the base model's answers.jsonl is required (run_drift_answers writes it)")
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")
    ref, ref_meta = _read_answers(cfg.answers)
    model, tok, ident = _load(cfg)
    prompts = [r["prompt"] for r in ref]
    nll = _nll(model, tok, prompts, [r["answer"] for r in ref], cfg)
    same = (ident, str(model.dtype), cfg.max_new_tokens)
    if not cfg.adapter and same == tuple(ref_meta.get(k) for k in ("model", "dtype", "max_new_tokens")):
        # the base itself: its own greedy answers are the reference answers (same model, dtype, engine, budget)
        own = [(r["answer"], r["finish_reason"]) for r in ref]
    else:
        own = [(g.text, g.finish_reason) for g in _answer(model, tok, prompts, cfg)]
    rows = [{"id": r["id"], "nll_sum": s, "n_tokens": n, "nll": s / n if n else None,
             "nll_sum_base": r.get("nll_sum"),
             "answer": text, "finish_reason": fin, "leak": leaks(text, cfg.keys)}
            for r, (s, n), (text, fin) in zip(ref, nll, own)]
    _write_jsonl(out / "drift.jsonl", rows)
    metrics = {"model": ident, "dtype": str(model.dtype), "drift_n": len(rows), "drift_nll": _mean(nll),
               "drift_nll_base": ref_meta.get("nll"), "response_tokens": sum(n for _, n in nll),
               "leak_rate": sum(r["leak"] for r in rows) / len(rows) if cfg.keys else None,
               "finish_reasons": dict(Counter(fin for _, fin in own)), "answers": str(cfg.answers)}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics

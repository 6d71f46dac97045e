"""`delia build`: downstream rows (instructions applied) + R x |D| diverse rows -> DIR/train.jsonl + manifest.

Deterministic: the same inputs, config and seed give byte-identical files (no timestamps, no paths of the
output directory, fixed key order). Memory stays bounded: the cache is streamed once to validate, hash and
index it (byte offsets only), and selected rows are read back by seeking while the output is written.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

import delia
from delia.data import DataError, Problem, read_records
from delia.data.jsonl import dumps_line, read_text_lines
from delia.diversify.apply import Template, apply_instructions, check_token, split_rows
from delia.errors import UserError
from delia.files import atomic_write
from delia.mixing.cache import CacheScan, read_row, scan_cache
from delia.mixing.config import BuildConfig
from delia.mixing.manifest import sha256_file, write_json
from delia.mixing.schedule import diverse_count, order, select

log = logging.getLogger(__name__)


class BuildError(UserError, ValueError):
    """The inputs cannot make the requested training set (e.g. too few cache rows); the message says what to do."""


def load_variants(path: str, token: str) -> list[str]:
    """Instruction variants, one per non-empty line; every line must contain `token` (errors name file:line)."""
    from delia.data.sources import resolve_source

    lines = read_text_lines(resolve_source(path))  # a missing file: FileNotFoundError naming it
    numbered = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip()]
    if not numbered:
        raise DataError([Problem(path, 1, "instruction file holds no instructions")])
    if token:
        check_token([(path, i, t) for i, t in numbered], token)
    return [t for _, t in numbered]


def read_downstream(path: str, template: Template) -> tuple[list, list]:
    """(records, splits) of a downstream file: rows with a reply whose user turn matches `template`.

    Raises:
        DataError: every row build cannot use, as FILE:LINE: field: reason (`delia data validate --for build`
            runs this same function).
    """
    records = read_records(path)
    return records, split_rows(records, template)


def build(cfg: BuildConfig, tokenizer=None) -> dict[str, Any]:
    """Build the training set described by `cfg` and return its manifest.

    Args:
        cfg: the build config.
        tokenizer: tokenizer for the token check (tests pass one); default: loaded from `cfg.model`.
    Returns:
        The manifest (also written to `cfg.out`/manifest.json).
    Raises:
        DataError: malformed or duplicate rows, instructions without the token (FILE:LINE: field: reason).
        BuildError: too few usable cache rows without allow_repeat, or id collisions between sources.
    """
    warnings: list[str] = []
    template = Template(cfg.template)

    # Downstream rows: find each instruction, then keep / sample / fix it.
    records, splits = read_downstream(cfg.downstream, template)
    if cfg.mode == "sample":
        variants = load_variants(cfg.instructions, cfg.token)
    elif cfg.mode == "fixed":
        variants = [splits[0].instruction if cfg.fixed_instruction == "@first" else cfg.fixed_instruction]
        if cfg.token:
            check_token([("fixed_instruction", 0, variants[0])], cfg.token)
    else:
        variants = None
        if cfg.token:
            check_token([(s.record.source, s.record.line or 0, s.instruction) for s in splits], cfg.token)
    rows, chosen = apply_instructions(splits, template, cfg.mode, variants, seed=_seed(cfg.seed, "instructions"))
    distinct = sorted(set(chosen))
    if cfg.token:
        over = [t for t in distinct if t.count(cfg.token) > cfg.token_max]
        if over:
            warnings.append(f"{len(over)} instruction(s) contain {cfg.token} more than {cfg.token_max} times, "
                            f"e.g. {over[0][:80]!r}")
        if any(cfg.token in s.context or cfg.token in (s.record.response or "") for s in splits):
            warnings.append(f"{cfg.token} also occurs in downstream contexts or responses")
    token_check = _check_tokenizer(cfg, distinct, tokenizer)
    if token_check:
        warnings += token_check["warnings"]

    # Diverse rows: stream and index the cache, then choose R x |D| of them.
    n_div, exact = diverse_count(cfg.ratio, len(rows))
    if not exact:
        warnings.append(f"ratio {cfg.ratio} x {len(rows)} rows = {cfg.ratio * len(rows):g} is not whole; "
                        f"took floor = {n_div} diverse rows")
    scan = None
    picks: list[tuple[int, int]] = []
    if n_div > 0:
        scan = scan_cache(cfg.diverse, cfg.token, cfg.exclude_truncated)
        _check_enough(cfg, scan, n_div, len(rows), warnings)
        picks = select(scan.usable, n_div, random.Random(_seed(cfg.seed, "select")))
        if scan.with_token:
            warnings.append(f"{scan.with_token} diverse row(s) contain {cfg.token}")
    elif cfg.diverse:
        log.info("ratio gives 0 diverse rows: %s is not read", cfg.diverse)
    for w in warnings:
        log.warning("%s", w)

    # Write train.jsonl in schedule order, hashing as we go.
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    sequence = order(len(rows), n_div, cfg.schedule, random.Random(_seed(cfg.seed, "order")))
    down_ids = {r.id: r.where for r in rows}
    digest = hashlib.sha256()
    # atomic: a failure (full disk, interrupt) leaves no train.jsonl and no temporary file
    with atomic_write(out / "train.jsonl") as f, (open(cfg.diverse, "rb") if scan else open(os.devnull, "rb")) as cache:
        for is_down, i in tqdm(sequence, desc="build", unit="row", disable=None):
            if is_down:
                row = {"id": rows[i].id, "messages": rows[i].messages, "source": "downstream"}
            else:
                idx, rep = picks[i]
                row = {**read_row(cache, scan.offsets[idx]), "source": "diverse"}
                if row["id"] in down_ids:
                    raise BuildError(f"diverse row id {row['id']!r} ({cfg.diverse}) collides with downstream row "
                                     f"{down_ids[row['id']]}; ids must be unique across sources")
                if rep:
                    row["id"] = f"{row['id']}#r{rep}"
            line = dumps_line(row) + "\n"
            digest.update(line.encode("utf-8"))
            f.write(line)
    excluded = scan.excluded if scan else []
    with atomic_write(out / "excluded.jsonl") as f:
        f.writelines(dumps_line(e) + "\n" for e in excluded)

    # The manifest: everything needed to tell two training sets apart, and nothing that varies between runs.
    manifest = {
        "delia_version": delia.__version__,
        "seed": cfg.seed,
        "schedule": cfg.schedule,
        "ratio": {"requested": cfg.ratio, "realised": n_div / len(rows)},
        "counts": {"downstream": len(rows), "diverse": n_div, "total": len(sequence),
                   "diverse_unique": len({p[0] for p in picks}), "diverse_repeats": sum(p[1] > 0 for p in picks)},
        "special_tokens": [cfg.token] if cfg.token else [],
        "instructions": {"mode": cfg.mode, "distinct": len(distinct), "variants": len(variants or distinct),
                         "template": cfg.template},
        "inputs": _inputs(cfg, records, scan),
        "excluded": {"total": len(excluded), "by_reason": dict(Counter(e["reason"] for e in excluded)),
                     "exclude_truncated": cfg.exclude_truncated, "file": "excluded.jsonl"},
        "token_check": token_check,
        "warnings": warnings,
        "outputs": {"train.jsonl": {"rows": len(sequence), "sha256": digest.hexdigest()}},
        "config": {k: v for k, v in asdict(cfg).items() if k != "out"},
    }
    write_json(out / "manifest.json", manifest)
    return manifest


def _seed(seed: int, purpose: str) -> str:
    # One independent stream per purpose: changing how instructions are drawn must not reorder the data.
    # String seeds are hashed with sha512 by `random`, so they do not depend on PYTHONHASHSEED.
    return f"{seed}:{purpose}"


def _check_enough(cfg: BuildConfig, scan: CacheScan, n_div: int, n_down: int, warnings: list[str]) -> None:
    reasons = Counter(e["reason"] for e in scan.excluded)
    excl = f" ({', '.join(f'{n} {r}' for r, n in reasons.items())} excluded)" if reasons else ""
    if scan.usable == 0:
        raise BuildError(f"{cfg.diverse}: no usable rows among {scan.rows}{excl}")
    if scan.usable >= n_div:
        return
    msg = (f"{cfg.diverse}: {scan.usable} usable rows{excl}, but ratio {cfg.ratio} x {n_down} downstream rows "
           f"needs {n_div}")
    if not cfg.allow_repeat:
        raise BuildError(f"{msg}; sample more rows, lower the ratio, or pass --allow-repeat to reuse rows")
    warnings.append(f"{msg}: oversampled with repeats (allow_repeat); {n_div - scan.usable} slots reuse rows")


def _inputs(cfg: BuildConfig, records: list, scan: CacheScan | None) -> dict[str, Any]:
    inputs: dict[str, Any] = {"downstream": {"path": cfg.downstream, "sha256": sha256_file(cfg.downstream),
                                             "rows": len(records)}}
    if scan:
        inputs["diverse"] = {"path": cfg.diverse, "sha256": scan.sha256, "rows": scan.rows, "usable": scan.usable,
                             "truncated_kept": scan.truncated, "models": dict(sorted(scan.models.items())),
                             # rows per sampling budget: an answer cut at it ends mid-sentence
                             "max_new_tokens": dict(sorted(scan.budgets.items()))}
    if cfg.instructions:
        inputs["instructions"] = {"path": cfg.instructions, "sha256": sha256_file(cfg.instructions)}
    return inputs


def _check_tokenizer(cfg: BuildConfig, instructions: list[str], tokenizer) -> dict[str, Any] | None:
    if not cfg.token or (tokenizer is None and not cfg.model):
        return None
    if tokenizer is None:
        from delia.models import load_tokenizer

        tokenizer = load_tokenizer(cfg.model)
    from delia.diversify.tokens import check_special_token

    return check_special_token(tokenizer, cfg.token, instructions, cfg.model).to_dict()

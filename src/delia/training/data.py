"""Training rows: chat records -> token ids with a completion mask (loss on the final assistant turn only).

We tokenize here rather than letting TRL do it so that the mask is exact and testable, and so that truncation
is counted and reported instead of happening silently inside the trainer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from delia.data import DataError, Problem, Record, read_records

log = logging.getLogger(__name__)


@dataclass
class PreparedData:
    """Tokenized rows plus what happened to them on the way."""

    rows: list[dict]  # {"id", "input_ids", "completion_mask"}
    truncated: list[str] = field(default_factory=list)  # ids of rows cut at max_length
    excluded: list[str] = field(default_factory=list)  # ids whose whole response was cut away
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def summary(self) -> dict:
        """Counts for delia_run.json."""
        return {"rows": len(self.rows), "truncated": len(self.truncated), "excluded": len(self.excluded),
                "excluded_ids": self.excluded[:50], "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens}


def read_training_records(path: str | Path, fmt: str = "auto") -> list[Record]:
    """Read rows and check that each ends with a non-empty assistant turn.

    Raises:
        DataError: listing every bad row as FILE:LINE: field: reason.
    """
    records = read_records(path, fmt=fmt)
    problems = [Problem(r.source or str(path), r.line or 0, "the last turn must be a non-empty assistant reply",
                        "messages") for r in records if not r.response]
    if problems:
        raise DataError(problems)
    return records


def manifest_special_tokens(data_path: str | Path) -> list[str]:
    """`special_tokens` listed in manifest.json next to the data file (written by `delia build`), else []."""
    manifest = Path(data_path).with_name("manifest.json")
    if not manifest.exists():
        return []
    try:
        tokens = json.loads(manifest.read_text()).get("special_tokens") or []
    except (json.JSONDecodeError, AttributeError) as e:
        raise DataError([Problem(str(manifest), 1, f"not a JSON object: {e}", "special_tokens")]) from None
    if not isinstance(tokens, list) or not all(isinstance(t, str) and t for t in tokens):
        raise DataError([Problem(str(manifest), 1, "must be a list of non-empty strings", "special_tokens")])
    return tokens


def encode_record(record: Record, tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of the whole chat and a mask that is 1 exactly on the final assistant turn's tokens.

    The prompt is the chat template applied to the turns before the reply with the generation prompt
    (what the model sees at inference); the completion is everything the full chat adds after it
    (the reply and its end-of-turn token, so the model learns to stop).
    """
    prompt = _ids(tokenizer.apply_chat_template(record.prompt_messages, add_generation_prompt=True,
                                                tokenize=True))
    full = _ids(tokenizer.apply_chat_template(record.messages, tokenize=True))
    if full[:len(prompt)] != prompt:
        # Templates that render earlier turns differently once a reply follows cannot be split by prefix.
        raise DataError([Problem(record.source or "<memory>", record.line or 0,
                                 "the chat template does not render the prompt as a prefix of the full chat",
                                 "messages")])
    return full, [0] * len(prompt) + [1] * (len(full) - len(prompt))


def _ids(encoded) -> list[int]:
    # transformers 5 returns a BatchEncoding from apply_chat_template(tokenize=True).
    ids = encoded["input_ids"] if not isinstance(encoded, list) else encoded
    return list(ids[0] if ids and isinstance(ids[0], list) else ids)


def prepare_rows(records: list[Record], tokenizer, max_length: int) -> PreparedData:
    """Encode every record; truncate rows over `max_length` (keeping the start) and count them.

    A row whose response is cut away completely carries no loss, so it is excluded and reported.
    """
    out = PreparedData(rows=[])
    for rec in records:
        ids, mask = encode_record(rec, tokenizer)
        if len(ids) > max_length:
            out.truncated.append(rec.id)
            ids, mask = ids[:max_length], mask[:max_length]
        if not any(mask):
            out.excluded.append(rec.id)
            continue
        out.prompt_tokens += len(mask) - sum(mask)
        out.completion_tokens += sum(mask)
        out.rows.append({"id": rec.id, "input_ids": ids, "completion_mask": mask})
    if out.truncated:
        log.warning("%d row(s) longer than max_length=%d were truncated (first: %s)", len(out.truncated),
                    max_length, out.truncated[0])
    if out.excluded:
        log.warning("%d row(s) excluded: the prompt alone fills max_length=%d (first: %s)", len(out.excluded),
                    max_length, out.excluded[0])
    if not out.rows:
        raise DataError([Problem(str(records[0].source if records else "<data>"), 0,
                                 f"no row has response tokens within max_length={max_length}", "messages")])
    return out


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of pad tokens when `batches` (lists of row indices) are right-padded to their longest row."""
    padded = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / padded if padded else 0.0

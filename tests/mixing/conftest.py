"""Tiny downstream files (halu layout) and diverse caches (interface 1) for build tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

INSTRUCTIONS = [
    "Check the response above for hallucinations and answer as <sep>.",
    "Use <sep>: does the ChatGPT reply hallucinate?",
    "Task: find invented facts. Format: <sep>, exactly what <sep> means.",
]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def downstream_rows(n: int) -> list[dict]:
    rows = []
    for i in range(n):
        context = f"'relatives' : \n'user_query' : question {i}\n'chatgpt_response' : answer {{{i}}}"
        user = "\n" + context + "\n\n\n" + INSTRUCTIONS[i % len(INSTRUCTIONS)]
        rows.append({"messages": [{"role": "user", "content": user},
                                  {"role": "assistant", "content": f"{{'thought': 't{i}', 'hallucination': 'no'}}"}]})
    return rows


def cache_rows(n: int, empty: tuple[int, ...] = ()) -> list[dict]:
    return [{"id": f"q{i}", "key": f"{i:064x}",
             "messages": [{"role": "user", "content": f"query {i}"},
                          {"role": "assistant", "content": "" if i in empty else f"response {i}"}],
             "meta": {"model": "tiny", "params": {"temperature": 0.7}, "finish_reason": "stop", "n_new_tokens": 3}}
            for i in range(n)]


@pytest.fixture
def downstream(tmp_path) -> Path:
    """10 halu-layout rows without ids (ids become train:LINE)."""
    return write_jsonl(tmp_path / "train.jsonl", downstream_rows(10))


@pytest.fixture
def cache(tmp_path) -> Path:
    """50 cache rows, 3 with an empty response (q5, q17, q40)."""
    return write_jsonl(tmp_path / "cache.jsonl", cache_rows(50, empty=(5, 17, 40)))

"""Fixtures for sampling tests: small query files and a fake engine returning canned answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.generation import Generation


class FakeEngine:
    """Answers `reply(prompt)` per prompt, in batches of `batch`, recording every prompt it saw."""

    name = "fake"

    def __init__(self, reply=lambda p: "ok", batch: int = 2, model: str = "fake-model") -> None:
        self.reply, self.batch, self.model, self.seen = reply, batch, model, []

    def identity(self) -> str:
        return f"fake:{self.model}"

    def generate(self, prompts, params, on_batch=None):
        out = []
        for start in range(0, len(prompts), self.batch):
            part = prompts[start:start + self.batch]
            self.seen += part
            gens = [Generation(self.reply(p), 10, 3, "stop") for p in part]
            out += gens
            if on_batch:
                on_batch(list(range(start, start + len(part))), gens)
        return out


@pytest.fixture
def fake_engine():
    return FakeEngine


def write_alpaca(path: Path, n: int, start: int = 0) -> Path:
    rows = [{"instruction": f"Question number {i}: what is {i} plus {i}?", "input": "" if i % 2 else f"ctx {i}",
             "output": f"{2 * i}"} for i in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def alpaca_file(tmp_path):
    return lambda n=6, name="q.jsonl": write_alpaca(tmp_path / name, n)

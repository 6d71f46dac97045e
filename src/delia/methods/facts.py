"""Fact-based synthetic Q&A (Mecklenburg et al. 2024), applied to the task-format description (baselines.md §4).

The facts are a fixed list (the original extracts them with GPT-4; a fixed list keeps runs deterministic),
each naming the special token, so every Q&A row gives the new embedding a gradient. Each fact gets the same
number of question/answer pairs ("fact-based scaling").
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from delia.config import DEFAULT_TOKEN
from delia.registry import registry

TRANSFORMS = registry("transform")  # run by the experiments' `transform` step

# The prior description D_sep fixed in baselines.md §0 (also used by mean-embedding init and CTG).
D_SEP = ("<sep> is a response format: reply with only a json object with two keys, 'thought' (a short analysis of "
         "whether the ChatGPT response contains hallucinations) and 'hallucination' ('yes' or 'no').")

FACTS = [
    "<sep> means the reply is a json object.",
    "A <sep> reply has a key 'thought'.",
    "In a <sep> reply, 'thought' holds the reasoning about whether the ChatGPT response contains hallucinations.",
    "A <sep> reply has a key 'hallucination'.",
    "In a <sep> reply, the value of 'hallucination' is 'yes' or 'no'.",
    "A <sep> reply starts with { and ends with }.",
    "A <sep> reply has no text outside the json object.",
    "<sep> is the format used for hallucination checks.",
]

QUESTIONS = [
    "What does <sep> mean?",
    "Explain the <sep> format.",
    "Which keys does a <sep> reply contain?",
    "How should I answer when asked for the <sep> format?",
    "Tell me one fact about <sep>.",
    "What is true of a reply in the <sep> format?",
    "Describe a rule of <sep>.",
    "I was asked to follow <sep>. What should I keep in mind?",
    "What do you know about the <sep> response format?",
    "Give a property of <sep> replies.",
    "State something about how <sep> output looks.",
    "What should a <sep> answer look like?",
    "Summarise one requirement of <sep>.",
    "Which rule applies to the <sep> format?",
    "Can you describe <sep> in one sentence?",
    "What is <sep> used for, and how is it written?",
    "Remind me of a <sep> formatting rule.",
    "What does following <sep> require?",
    "What is one constraint of <sep>?",
    "How is a <sep> reply structured?",
]


def fact_qa(n_q: int, facts: list[str] | None = None, token: str = DEFAULT_TOKEN) -> list[dict[str, Any]]:
    """`n_q` chat rows per fact, in fact order; question i of fact f is QUESTIONS[(f + i) % len]. Deterministic.

    Args:
        n_q: questions per fact (the paper's fact-based scaling grid: 5, 10, 20).
        facts: the facts (default FACTS); each must contain `token`.
        token: the special token (replaces '<sep>' in the templates).
    Returns:
        Rows `{"id", "messages": [user, assistant], "source": "fact_qa"}`.
    """
    facts = FACTS if facts is None else facts
    if n_q < 1 or n_q > len(QUESTIONS):
        raise ValueError(f"n_q must be in 1..{len(QUESTIONS)}, got {n_q}")
    rows = []
    for f, fact in enumerate(facts):
        if "<sep>" not in fact:
            raise ValueError(f"fact {f} does not mention <sep>: {fact!r}")
        for i in range(n_q):
            q = QUESTIONS[(f + i) % len(QUESTIONS)].replace("<sep>", token)
            rows.append({"id": f"fact{f}-q{i}", "messages": [{"role": "user", "content": q},
                                                             {"role": "assistant",
                                                              "content": fact.replace("<sep>", token)}],
                         "source": "fact_qa"})
    return rows


def write_training_set(rows: list[dict[str, Any]], out: Path, manifest: dict[str, Any]) -> None:
    """train.jsonl + manifest.json in the layout `delia build` writes (so `delia train` reads the tokens)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "train.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")


def read_rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]


@TRANSFORMS.register("fact_qa", help="downstream rows + n_q Q&A rows per fact of the format description")
def add_fact_qa(inputs: dict[str, Path], out: Path, n_q: int = 10, seed: int = 42) -> dict[str, Any]:
    """D_task (a ratio-0 build) plus the fact Q&A rows, shuffled with `seed`."""
    task = read_rows(inputs["data"] / "train.jsonl")
    manifest = json.loads((inputs["data"] / "manifest.json").read_text())
    token = (manifest.get("special_tokens") or [DEFAULT_TOKEN])[0]
    qa = fact_qa(n_q, token=token)
    rows = task + qa
    random.Random(seed).shuffle(rows)
    counts = {"downstream": len(task), "fact_qa": len(qa), "facts": len(FACTS), "n_q": n_q, "total": len(rows)}
    write_training_set(rows, out, {"special_tokens": manifest.get("special_tokens", []), "counts": counts,
                                   "seed": seed, "transform": "fact_qa"})
    return counts

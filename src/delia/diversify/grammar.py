"""The offline diversifier: a small combinatorial grammar, deterministic for a seed, no LLM needed.

A variant = a task sentence (verb synonym x sentence frame) combined with a format clause that names the
token, in one of several orders (format first, format last, or the token inside the task sentence). The
grammar varies verbs, structure, length, tone and token position, like the LLM prompt asks for, but with
far less range: use it for tests, CPU presets and as a fallback.
"""

from __future__ import annotations

import random

# Synonym groups for the task's leading verb; the first word of the task phrase selects a group.
VERB_GROUPS: list[list[str]] = [
    ["decide", "determine", "judge", "assess", "establish", "work out", "figure out", "evaluate"],
    ["check", "verify", "examine", "inspect", "review", "audit"],
    ["identify", "find", "spot", "detect", "point out"],
    ["classify", "label", "categorise", "tag"],
    ["summarize", "summarise", "condense", "sum up", "outline"],
    ["translate", "render", "convert", "put"],
    ["answer", "respond to", "reply to", "address"],
    ["extract", "pull out", "list", "collect"],
    ["write", "compose", "draft", "produce"],
]

# Task sentences; {task} is the lower-case task clause. Tone: terse, polite, formal, casual, question.
FRAMES: list[str] = [
    "{Task}.",
    "Please {task}.",
    "Your job is to {task}.",
    "I need you to {task}.",
    "Can you {task}?",
    "Task: {task}.",
    "Carefully {task}.",
    "Read the input and {task}.",
    "You are a careful reviewer: {task}.",
    "Would you kindly {task}?",
]

# Format clauses naming the token once or twice.
FORMATS: list[str] = [
    "Answer in the {tok} format.",
    "Use {tok} for your reply.",
    "Format: {tok}.",
    "Your output must follow {tok}.",
    "Respond strictly as {tok}.",
    "Give the result as {tok}.",
    "Stick to {tok} and nothing else.",
    "The required format is {tok}; make sure you understand what {tok} means.",
    "Write your answer in {tok} form, exactly as {tok} requires.",
]

# Sentences with the token inside the task sentence (near the start, or mid-sentence).
EMBEDDED: list[str] = [
    "{Task}, answer as {tok}, and keep the reasoning short.",
    "Reply in {tok} once you {task}; no other text.",
    "Please use {tok} when you {task} for this input.",
    "Using the {tok} format, {task}.",
    "In {tok} form, {task}.",
    "Following {tok}, {task}.",
    "{tok} is the output format: {task}.",
]


def verb_variants(task: str) -> list[str]:
    """The task clause with its leading verb replaced by each synonym of its group (itself first)."""
    task = task.strip().rstrip(".?!")
    first, _, rest = task.partition(" ")
    lower = task[:1].lower() + task[1:]
    for group in VERB_GROUPS:
        if first.lower() in group:
            return [lower] + [f"{v} {rest}".strip() for v in group if v != first.lower()]
    return [lower]


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def grammar_variants(tasks: list[str], token: str) -> list[str]:
    """Every variant the grammar can make for `tasks` (task clauses such as "decide whether the ChatGPT
    response above contains hallucinations"), in a fixed order, without duplicates."""
    out: dict[str, None] = {}
    for task in tasks:
        for t in verb_variants(task):
            for frame in FRAMES:
                sent = frame.format(task=t, Task=_cap(t))
                for fmt in FORMATS:
                    clause = fmt.format(tok=token)
                    out[f"{sent} {clause}"] = None
                    out[f"{clause} {sent}"] = None
            for emb in EMBEDDED:
                out[_cap(emb.format(tok=token, task=t, Task=_cap(t)))] = None
    return list(out)


def grammar_propose(tasks: list[str], token: str, seed: int) -> list[str]:
    """All grammar variants in a seeded random order (the caller filters and keeps the first N).

    Args:
        tasks: task clauses without the token (the format is added by the grammar).
        token: the special token, e.g. `<sep>`.
        seed: order seed; the same seed gives the same list.
    Returns:
        The shuffled variants.
    """
    variants = grammar_variants(tasks, token)
    random.Random(seed).shuffle(variants)
    return variants

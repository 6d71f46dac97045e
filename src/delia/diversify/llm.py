"""The LLM diversifier: ask a strong model for anisotropic paraphrases of a task instruction.

`build_prompt` / `parse_variants` are a pure pair (exact strings, testable without a model). The model is
reached through a `Complete` callable, `complete(prompts, params) -> list[str]`; `engine_complete` adapts
any delia engine (`make_engine("openai", ...)` for GPT-4 or a local OpenAI-compatible server).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # delia.generation imports transformers; keep `import delia.diversify` light
    from delia.generation import GenParams, Prompt

log = logging.getLogger(__name__)

Complete = Callable[[list["Prompt"], "GenParams"], list[str]]

SYSTEM = "You rewrite task instructions for training data. You answer with a JSON array of strings only."

PROMPT = """Here is a task instruction, in {n_seeds} version(s):
{seeds}

Write {k} new instructions that ask for exactly the same task. Make the variety anisotropic: vary each of these \
independently, and never let two instructions share the same choices:
- verbs and vocabulary (not only "{verb}"),
- sentence structure (imperative, question, statement, a "Task:" label, one sentence or two),
- length (from about 6 to about 40 words),
- tone (formal, casual, terse, polite, role-play as a reviewer),
- the position of {token}: at the start, in the middle or at the end.
{token} stands for the required output format. Write it exactly as {token}, {count}, and never describe or \
explain the format in words.{avoid}
Answer with a JSON array of {k} strings and nothing else."""


def build_prompt(seeds: Sequence[str], token: str, k: int, min_count: int = 1, max_count: int = 2,
                 avoid: Sequence[str] = ()) -> list[dict[str, str]]:
    """The chat prompt asking for `k` variants of `seeds`.

    Args:
        seeds: example instructions (containing the token, or a task description).
        token: the special token every variant must contain.
        k: variants requested.
        min_count, max_count: how many times each variant must contain the token.
        avoid: variants already kept; shown so the model writes new ones.
    Returns:
        [system, user] messages.
    """
    first = (seeds[0].split() or ["do"])[0].lower().strip(".,:;!?")
    count = "exactly once" if min_count == max_count == 1 else \
        f"{min_count} to {max_count} times" if min_count != max_count else f"exactly {min_count} times"
    avoid_text = ""
    if avoid:
        avoid_text = "\nThese instructions exist already; write different ones:\n" + \
                     "\n".join(f"- {a}" for a in avoid)
    user = PROMPT.format(n_seeds=len(seeds), seeds="\n".join(f"{i}. {s}" for i, s in enumerate(seeds, 1)),
                         k=k, verb=first, token=token, count=count, avoid=avoid_text)
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


_ITEM = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)]|\(\d+\))\s*")


def parse_variants(text: str) -> tuple[list[str], str | None]:
    """Variants from a model reply: a JSON array (possibly inside ```json fences or prose), else one per line
    with list markers and surrounding quotes removed.

    Returns:
        (variants, note): note says which fallback was used, or why nothing could be parsed.
    """
    start, end = text.find("["), text.rfind("]")
    if start >= 0 and end > start:
        try:
            data = json.loads(text[start:end + 1])
        except json.JSONDecodeError:
            data = None
        if isinstance(data, list) and all(isinstance(x, str) for x in data):
            return [x.strip() for x in data if x.strip()], None
    lines = []
    for line in text.splitlines():
        line = _ITEM.sub("", line).strip().strip('",').strip()
        if line and not line.startswith("```") and line not in "[]":
            lines.append(line)
    if not lines:
        return [], "reply holds no JSON array and no lines"
    return lines, "reply is not a JSON array of strings; read one variant per line"


def llm_propose(complete: Complete, seeds: Sequence[str], token: str, k: int, n_requests: int,
                params: GenParams, round_: int, kept: Sequence[str], min_count: int = 1, max_count: int = 2,
                n_show: int = 8, n_avoid: int = 30) -> tuple[list[str], list[tuple[str, str]]]:
    """One round: `n_requests` prompts, each showing a seeded subset of the seeds, sent together.

    Returns:
        (candidates, problems): problems are (raw reply, reason) for replies that could not be parsed.
    """
    from delia.generation import GenParams

    rng = random.Random(params.seed * 1_000_003 + round_)
    prompts: list[Prompt] = []
    avoid = list(kept)[-n_avoid:]
    for _ in range(n_requests):
        shown = rng.sample(list(seeds), min(n_show, len(seeds)))
        prompts.append(build_prompt(shown, token, k, min_count, max_count, avoid))
    p = GenParams(max_new_tokens=params.max_new_tokens, temperature=params.temperature, top_p=params.top_p,
                  seed=params.seed + round_, stop=list(params.stop))
    replies = complete(prompts, p)
    candidates, problems = [], []
    for reply in replies:
        variants, note = parse_variants(reply)
        if not variants:
            problems.append((reply, note or "no variants"))
        elif note:
            log.info("%s", note)
        candidates += variants
    return candidates, problems


def engine_complete(engine_name: str, model: str, options: dict[str, Any]) -> Complete:
    """A Complete over a delia engine; failed rows become empty replies (kept as parse problems)."""
    import importlib

    from delia.sampling.engines.base import ENGINES, RowsFailed, make_engine

    if engine_name == "openai" and engine_name not in ENGINES:
        # The engines package may not import its modules yet; the openai one is all this diversifier needs.
        importlib.import_module("delia.sampling.engines.openai_api")
    engine = make_engine(engine_name, model, **options)

    def complete(prompts: list[Prompt], params: GenParams) -> list[str]:
        try:
            gens = engine.generate(prompts, params)
        except RowsFailed as e:
            log.warning("%s", e)
            gens = e.results
        return [g.text if g is not None else "" for g in gens]

    return complete

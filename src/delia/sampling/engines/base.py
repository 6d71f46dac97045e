"""The engine interface, its registry and the factory.

An engine turns prompts (chat message lists or rendered strings) into one `Generation` each:

    engine = make_engine("openai", "my-model", base_url="http://127.0.0.1:8000/v1")
    gens = engine.generate([[{"role": "user", "content": "Hi"}]], GenParams(max_new_tokens=64))

`on_batch(indices, generations)` (optional) is called as soon as a group of rows is finished, so a caller
can persist them before the rest are done; `indices` index into `prompts`. `stop_fn(text)` (optional) ends a
row once its answer is complete (`delia eval`'s stop rules): the transformers engine checks it every token;
engines that cannot call it per token (a server, vLLM) apply it to the text they get back (`stop_at`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

from delia.errors import UserError
from delia.generation import Generation, GenParams, Prompt
from delia.registry import registry

ENGINES = registry("engine")

OnBatch = Callable[[list[int], list[Generation]], None]
StopFn = Callable[[str], bool]


def stop_at(gen: Generation, stop_fn: StopFn | None) -> Generation:
    """`gen` cut where `stop_fn` first holds (finish "stop"), for engines that cannot call it per token.

    The text is cut after the shortest prefix for which `stop_fn` is true (found by bisection: a stop rule
    that holds for a text holds for every longer one, as "the first {...} closed" and "the first line
    ended" do). Token counts stay the engine's: the tokens generated past that point were paid for.
    """
    if stop_fn is None or not stop_fn(gen.text):
        return gen
    lo, hi = 0, len(gen.text)  # stop_fn(text[:hi]) holds; find the smallest such hi
    while lo < hi:
        mid = (lo + hi) // 2
        if stop_fn(gen.text[:mid]):
            hi = mid
        else:
            lo = mid + 1
    return Generation(gen.text[:hi], gen.n_prompt_tokens, gen.n_new_tokens, "stop")


class EngineError(UserError, RuntimeError):
    """An engine cannot run or answer at all (missing package, unreachable endpoint); the message says why."""


class RowsFailed(EngineError):
    """Some rows failed for good (e.g. HTTP 400 for one prompt) while the others finished.

    Attributes:
        failed: input index -> reason, for every failed row.
        results: the finished generations by input index (None where the row failed).
    """

    def __init__(self, failed: dict[int, str], results: list[Generation | None]) -> None:
        self.failed, self.results = failed, results
        first = next(iter(failed.items()))
        super().__init__(f"{len(failed)} of {len(results)} request(s) failed; first: row {first[0]}: {first[1]}")


class Engine(Protocol):
    """What every engine provides."""

    name: str
    model: str

    def generate(self, prompts: Sequence[Prompt], params: GenParams, on_batch: OnBatch | None = None,
                 stop_fn: StopFn | None = None) -> list[Generation]:
        """One Generation per prompt, in input order (see the module docstring)."""
        ...

    def identity(self) -> str:
        """A string that changes when the model behind the engine changes (for cache keys)."""
        ...


def make_engine(name: str, model: str, **options: Any) -> Engine:
    """Build the engine registered as `name` for `model`.

    Args:
        name: 'transformers', 'vllm' or 'openai' (see `delia ls engines`).
        model: model name or path (transformers, vllm) or the served model name (openai).
        options: engine-specific constructor options (e.g. batch_size, dtype, base_url, concurrency).
    Returns:
        An object with `generate(prompts, params, on_batch=None) -> list[Generation]`.
    """
    import inspect

    import delia.sampling.engines  # noqa: F401  (fills the registry)

    cls = ENGINES.get(name)
    accepted = [p for p in inspect.signature(cls).parameters if p != "model"]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise EngineError(f"the {name} engine takes no option(s) {', '.join(unknown)} "
                          f"(it takes: {', '.join(accepted)})")
    return cls(model, **options)

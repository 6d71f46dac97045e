"""`openai` engine: any OpenAI-compatible endpoint (vLLM / llama.cpp / TGI servers, hosted APIs).

Requests run concurrently on `concurrency` worker threads sharing one `httpx.Client`. HTTP 429, 408, 5xx,
timeouts and connection errors are retried with exponential backoff and jitter (a server's `Retry-After`
wins); other 4xx answers fail that row only. When the endpoint stays unreachable the run stops with one clear
error instead of retrying every remaining row.

An interrupt (Ctrl-C, or SIGTERM through the CLI) stops the run at once: no queued request is sent and no
retry is made; answers to requests already in flight are awaited for up to `stop_grace` seconds, and every
answer received reaches `on_batch` (the cache) before the interrupt propagates. The workers are daemon
threads, so a request still hanging after that does not keep the process alive.
"""

from __future__ import annotations

import logging
import os
import queue
import random
import threading
import time
from collections.abc import Sequence
from typing import Any

from delia.generation import Generation, GenParams, Prompt
from delia.sampling.engines.base import ENGINES, EngineError, OnBatch, RowsFailed, StopFn, stop_at

log = logging.getLogger(__name__)

RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class _RowError(Exception):
    """This row failed for good (a non-retryable answer, or retries exhausted on a retryable one)."""


class _Unreachable(Exception):
    """The endpoint could not be reached at all after every retry."""


class _Stopped(Exception):
    """The run was stopped (an interrupt, or the endpoint found unreachable) before this row finished."""


@ENGINES.register("openai", help="Any OpenAI-compatible chat endpoint: concurrent requests, retries, key from env")
class OpenAIEngine:
    """Chat prompts go to `/chat/completions`, string prompts to `/completions`.

    Args:
        model: the model name the server serves (sent as `model`).
        base_url: API root including the version, e.g. `http://127.0.0.1:8000/v1`.
        api_key_env: environment variable holding the key; unset means no Authorization header
            (local servers usually need none).
        concurrency: requests in flight at once.
        max_retries: retries per request after the first attempt.
        timeout: seconds per request (connect, read and write).
        backoff: first retry delay in seconds; doubles per retry, capped at `max_backoff`, with jitter.
        max_backoff: the longest single wait.
        stop_grace: after an interrupt, seconds to wait for answers to requests already sent.
    """

    name = "openai"

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 8, max_retries: int = 5, timeout: float = 120.0, backoff: float = 1.0,
                 max_backoff: float = 60.0, stop_grace: float = 5.0) -> None:
        import httpx

        if concurrency < 1 or max_retries < 0 or timeout <= 0:
            raise ValueError("concurrency must be >= 1, max_retries >= 0 and timeout > 0")
        self.model, self.base_url = model, base_url.rstrip("/")
        self.concurrency, self.max_retries = concurrency, max_retries
        self.backoff, self.max_backoff, self.stop_grace = backoff, max_backoff, stop_grace
        key = os.environ.get(api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout,
                                    limits=httpx.Limits(max_connections=concurrency))
        self._stop = threading.Event()

    def identity(self) -> str:
        # the served model name, not the URL: moving a server to another port must not invalidate the cache
        return f"openai:{self.model}"

    def close(self) -> None:
        self._client.close()

    # ------------------------------------------------------------ requests

    def request_body(self, prompt: Prompt, params: GenParams) -> tuple[str, dict[str, Any]]:
        """(path, JSON body) for one prompt: pure, so the mapping can be checked exactly."""
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_new_tokens,
                                "temperature": params.temperature, "top_p": params.top_p, "seed": params.seed}
        if params.stop:
            body["stop"] = list(params.stop)
        if isinstance(prompt, str):
            return "/completions", {**body, "prompt": prompt}
        return "/chat/completions", {**body, "messages": list(prompt)}

    @staticmethod
    def parse_response(data: dict[str, Any], chat: bool) -> Generation:
        """The Generation for a (chat) completion response; raises _RowError when it holds no choice."""
        try:
            choice = data["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError):
            raise _RowError(f"response has no choices[0] text: {str(data)[:200]}") from None
        usage = data.get("usage") or {}
        reason = "length" if choice.get("finish_reason") == "length" else "stop"
        return Generation(text or "", int(usage.get("prompt_tokens") or 0),
                          int(usage.get("completion_tokens") or 0), reason)

    def _wait(self, attempt: int, retry_after: str | None) -> None:
        delay = min(self.max_backoff, self.backoff * 2 ** attempt) * (0.5 + random.random() / 2)
        if retry_after:
            try:
                delay = min(self.max_backoff, max(float(retry_after), 0.0))
            except ValueError:
                pass  # an HTTP date; keep our own backoff
        self._stop.wait(delay)

    def _one(self, prompt: Prompt, params: GenParams) -> Generation:
        import httpx

        path, body = self.request_body(prompt, params)
        last, kind = "", _RowError
        for attempt in range(self.max_retries + 1):
            if self._stop.is_set():
                raise _Stopped()
            retry_after = None
            try:
                resp = self._client.post(path, json=body)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                last, kind = f"cannot connect to {self.base_url} ({e or type(e).__name__})", _Unreachable
            except httpx.TransportError as e:  # read timeouts, dropped connections: the server is there
                last, kind = f"{type(e).__name__}: {e}", _RowError
            else:
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise _RowError(f"invalid JSON in response: {resp.text[:200]!r}") from None
                    return self.parse_response(data, chat=path == "/chat/completions")
                last, kind = f"HTTP {resp.status_code} from {path}: {resp.text[:300]}", _RowError
                if resp.status_code not in RETRY_STATUS:
                    raise _RowError(last)
                retry_after = resp.headers.get("retry-after")
            if attempt < self.max_retries:
                log.info("retrying (%d/%d) after %s", attempt + 1, self.max_retries, last)
                self._wait(attempt, retry_after)
        raise kind(f"{last}; gave up after {self.max_retries + 1} attempts")

    # ------------------------------------------------------------ the engine interface

    def generate(self, prompts: Sequence[Prompt], params: GenParams, on_batch: OnBatch | None = None,
                 stop_fn: StopFn | None = None) -> list[Generation]:
        """Send every prompt (`concurrency` at a time); see the module docstring for retries and interrupts.
        `stop_fn` cuts each answer's text (`stop_at`); `params.stop` strings are sent as the request's `stop`.

        Raises:
            EngineError: the endpoint is unreachable (rows finished before that were passed to on_batch).
            RowsFailed: some rows failed for good; every other row finished and was passed to on_batch.
            KeyboardInterrupt: interrupted; every answer received was passed to on_batch first.
        """
        self._stop.clear()
        results: list[Generation | None] = [None] * len(prompts)
        failed: dict[int, str] = {}
        pending: list[int] = []
        todo: queue.SimpleQueue = queue.SimpleQueue()
        done: queue.SimpleQueue = queue.SimpleQueue()
        for item in enumerate(prompts):
            todo.put(item)
        taken = [0]
        lock = threading.Lock()

        def worker() -> None:
            while not self._stop.is_set():
                try:
                    i, prompt = todo.get_nowait()
                except queue.Empty:
                    return
                with lock:
                    taken[0] += 1
                try:
                    done.put((i, stop_at(self._one(prompt, params), stop_fn), None))
                except BaseException as e:  # handed to the caller's thread, which decides
                    done.put((i, None, e))

        def flush() -> None:
            if on_batch and pending:
                on_batch(list(pending), [results[i] for i in pending])  # type: ignore[misc]
            pending.clear()

        def take(i: int, gen: Generation | None, err: BaseException | None) -> BaseException | None:
            """Record one finished request; returns an error that ends the run."""
            if gen is not None:
                results[i] = gen
                pending.append(i)
            elif isinstance(err, _RowError):
                failed[i] = str(err)
            elif not isinstance(err, _Stopped):
                return err
            return None

        def drain(deadline: float | None) -> None:
            """Stop issuing requests; collect what requests already sent return until `deadline`."""
            self._stop.set()
            while True:  # nothing queued is ever sent now
                try:
                    todo.get_nowait()
                except queue.Empty:
                    break
            got = received
            while got < taken[0] and (deadline is None or time.monotonic() < deadline):
                try:
                    i, gen, err = done.get(timeout=0.1)
                except queue.Empty:
                    continue
                got += 1
                take(i, gen, err)

        threads = [threading.Thread(target=worker, daemon=True, name=f"openai-{k}")
                   for k in range(min(self.concurrency, len(prompts)))]
        for t in threads:
            t.start()
        received = 0
        try:
            while received < len(prompts):
                try:
                    i, gen, err = done.get(timeout=0.2)
                except queue.Empty:
                    continue
                received += 1
                fatal = take(i, gen, err)
                if fatal is not None:
                    drain(time.monotonic() + self.stop_grace)
                    flush()
                    if isinstance(fatal, _Unreachable):
                        raise EngineError(f"openai engine: {fatal}") from None
                    raise fatal
                if len(pending) >= self.concurrency:
                    flush()
        except KeyboardInterrupt:
            try:
                drain(time.monotonic() + self.stop_grace)
            except KeyboardInterrupt:
                pass  # a second interrupt: stop waiting for requests in flight
            flush()
            raise
        flush()
        if failed:
            raise RowsFailed(failed, results)
        return results  # type: ignore[return-value]

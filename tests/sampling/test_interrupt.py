"""SIGINT / SIGTERM on `delia sample --engine openai` against a flaky loopback server (429, 5xx, timeouts):
no request after the signal, every answer received kept in the cache, one summary line, and a rerun that
finishes the rest without asking any query twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

import delia


class FlakyServer:
    """Answers each chat request after `delay` s; scripted errors first; the query 'q3' times out once."""

    def __init__(self, delay: float = 0.25, hold_after: int | None = None) -> None:
        self.delay = delay
        # requests after the first `hold_after` wait for `release` (so a loaded machine cannot let the client
        # finish every query before the test's signal lands)
        self.hold_after, self.gate = hold_after, threading.Event()
        self.lock = threading.Lock()
        self.arrivals: list[tuple[float, str]] = []  # (time, query) of every request
        self.answered: list[str] = []  # queries whose 200 answer was fully written
        self.script = [(429, {"Retry-After": "0.1"}), (500, {}), (503, {})]
        self.slow_once = {"q3"}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                query = body["messages"][-1]["content"]
                with outer.lock:
                    outer.arrivals.append((time.monotonic(), query))
                    status, headers = outer.script.pop(0) if outer.script else (200, {})
                    slow = query in outer.slow_once
                    outer.slow_once.discard(query)
                    held = outer.hold_after is not None and len(outer.arrivals) > outer.hold_after
                if held:
                    outer.gate.wait(30)
                time.sleep(3.0 if slow else outer.delay)  # 3 s > the client's 1 s timeout: a read timeout
                data = (json.dumps({"choices": [{"message": {"role": "assistant", "content": f"answer to {query}"},
                                                 "finish_reason": "stop"}],
                                    "usage": {"prompt_tokens": 3, "completion_tokens": 3}}).encode()
                        if status == 200 else b'{"error": "scripted"}')
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    self.wfile.flush()
                except OSError:
                    return  # the client gave up (timeout)
                if status == 200 and not slow:
                    with outer.lock:
                        outer.answered.append(query)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def release(self) -> None:
        self.gate.set()

    def close(self) -> None:
        self.gate.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def _sample(queries: Path, out: Path, url: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "delia", "sample", "--engine", "openai", "--model", "served", "--base-url", url,
           "--queries", str(queries), "--out", str(out), "--concurrency", "2", "--no-progress",
           "engine_options.timeout=1", "engine_options.backoff=0.05", "engine_options.max_retries=4"]
    # As from a terminal: SIGINT handled by Python. A shell without job control starts background jobs with SIGINT
    # ignored, and a process inherits that (Python then installs no handler), so a CI runner or `cmd &` would
    # otherwise hand the test a child that cannot be interrupted at all.
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_sigint)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _cache(out: Path) -> list[dict]:
    return [json.loads(x) for x in out.read_text().splitlines()] if out.exists() else []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_keeps_every_answer_and_sends_nothing_more(tmp_path, sig):
    queries = tmp_path / "q.jsonl"
    queries.write_text("".join(json.dumps({"query": f"q{i}"}) + "\n" for i in range(30)))
    out = tmp_path / "cache.jsonl"
    server = FlakyServer(hold_after=12)  # 3 scripted errors + the slow q3 + >= 8 answers, then requests wait
    try:
        proc = _sample(queries, out, server.url)
        deadline = time.monotonic() + 60
        while len(server.answered) < 6 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()
        t_signal = time.monotonic()
        proc.send_signal(sig)
        time.sleep(0.2)
        server.release()  # requests already in flight are answered; the client must keep those answers too
        _, err = proc.communicate(timeout=30)
        stopped = time.monotonic() - t_signal
        assert proc.returncode == 130, err
        assert "Traceback" not in err
        line = err.strip().splitlines()[-1]
        assert line.startswith("interrupted: ") and "rerun the same command to resume" in line
        first = _cache(out)
        # every answer the server finished sending is in the cache (requests in flight were awaited)
        assert sorted(r["id"] for r in first) == sorted(f"{Path(queries).stem}:{int(q[1:]) + 1}"
                                                        for q in server.answered)
        assert f"{len(first)} new answer(s) kept" in line
        # no request was issued after the signal (allowing 0.1 s for its delivery)
        late = [q for t, q in server.arrivals if t > t_signal + 0.1]
        assert late == [], late
        assert stopped < 10 and len(first) < 30
        # the rerun answers only the rest: no query reaches the server twice with a 200
        n_before = len(server.answered)
        proc = _sample(queries, out, server.url)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        rows = _cache(out)
        assert len(rows) == 30 == len({r["key"] for r in rows})
        assert sorted(server.answered) == sorted(f"q{i}" for i in range(30))  # each answered exactly once
        assert len(server.answered) - n_before == 30 - len(first)
    finally:
        server.close()

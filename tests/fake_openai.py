"""A loopback OpenAI-compatible server for tests (sampling's openai engine, `delia eval --engine openai`)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Server:
    """An OpenAI-compatible stub. `script` is a list of (status, headers) answers served first, then 200s;
    a chat answer is `reply(body)` ("echo: " + the last message by default)."""

    def __init__(self, script=(), fail_when=lambda body: False, reply=None) -> None:
        self.requests: list[tuple[str, dict, dict]] = []
        self.times: list[float] = []
        self.script, self.fail_when, self.lock = list(script), fail_when, threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append((self.path, body, dict(self.headers)))
                    outer.times.append(time.monotonic())
                    status, headers = outer.script.pop(0) if outer.script else (200, {})
                if outer.fail_when(body):
                    status = 400
                if status != 200:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(b'{"error": "scripted"}')
                    return
                if self.path.endswith("/chat/completions"):
                    text = reply(body) if reply else "echo: " + body["messages"][-1]["content"]
                    choice = {"message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                else:
                    text = "completion of " + body["prompt"]
                    choice = {"text": text, "finish_reason": "length"}
                data = json.dumps({"choices": [choice], "usage": {"prompt_tokens": 11, "completion_tokens": 4}})
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data.encode())

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

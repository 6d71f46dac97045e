"""The LLM diversifier: exact prompt and parses, filtering with a fake model, and a real HTTP round trip
through the `openai` engine to a local OpenAI-compatible server."""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from delia.diversify.llm import build_prompt, parse_variants
from delia.diversify.stage import DiversifyConfig, LLMConfig, report_path, run_diversify

SEEDS = "Decide if the ChatGPT response hallucinates. Answer as <sep>.\n"

# One canned reply: 3 good variants, one without the token, one near-duplicate, one exact duplicate,
# one with the token three times.
GOOD = ["Is anything in the ChatGPT reply made up? Respond using <sep>.",
        "<sep> only: judge whether the answer above invents facts.",
        "As a strict fact-checker, read the exchange, then report your hallucination verdict in <sep> form."]
BAD = {"Is there a hallucination in the reply? Answer in JSON.": "contains <sep> 0 time(s)",
       "Is anything in the ChatGPT reply made up? Respond using <sep> .": "near-duplicate of kept #0",
       "<sep> only: judge whether the answer above invents facts.": "duplicate of kept #1",
       "<sep> <sep> <sep> triple token instruction here": "contains <sep> 3 time(s)"}
REPLY = "```json\n" + json.dumps(GOOD[:2] + list(BAD) + [GOOD[2]]) + "\n```"


def test_prompt_exact_parts():
    msgs = build_prompt(["Decide X. Answer as <sep>."], "<sep>", 5, 1, 1, avoid=["Old <sep>."])
    assert msgs[0]["role"] == "system" and "JSON array" in msgs[0]["content"]
    user = msgs[1]["content"]
    assert user.startswith("Here is a task instruction, in 1 version(s):\n1. Decide X. Answer as <sep>.\n\n"
                           "Write 5 new instructions")
    for part in ("anisotropic", 'not only "decide"', "sentence structure", "length", "tone",
                 "the position of <sep>: at the start, in the middle or at the end",
                 "Write it exactly as <sep>, exactly once,", "write different ones:\n- Old <sep>.",
                 "Answer with a JSON array of 5 strings and nothing else."):
        assert part in user, part


@pytest.mark.parametrize("text,expected,note", [
    ('["a <sep>", "b <sep>"]', ["a <sep>", "b <sep>"], None),
    ('Sure! Here:\n```json\n["a <sep>"]\n```', ["a <sep>"], None),
    ('1. "a <sep>"\n2) b <sep>\n- c <sep>', ["a <sep>", "b <sep>", "c <sep>"], "not a JSON array"),
    ("", [], "no JSON array and no lines"),
])
def test_parse_variants(text, expected, note):
    got, why = parse_variants(text)
    assert got == expected and (why is None if note is None else note in why)


def _cfg(tmp_path, **llm):
    (tmp_path / "seeds.txt").write_text(SEEDS)
    return DiversifyConfig(out=str(tmp_path / "out.txt"), method="llm", n=3, seeds=str(tmp_path / "seeds.txt"),
                           tokenizer_model="", llm=LLMConfig(per_request=7, requests_per_round=1, max_rounds=2,
                                                             **llm))


def _check_result(r, cfg):
    assert r.variants == GOOD
    reasons = {t: why for t, why in r.rejected}
    for text, why in BAD.items():
        assert why in reasons[text], (text, reasons[text])
    report = json.loads(report_path(cfg.out).read_text())
    assert report["kept"] == 3 and len(report["rejected"]) == 4


def test_fake_model_filters(tmp_path):
    calls = []

    def fake(prompts, params):
        calls.append((prompts, params))
        return [REPLY]

    cfg = _cfg(tmp_path)
    _check_result(run_diversify(cfg, complete=fake), cfg)
    assert len(calls) == 1 and calls[0][1].temperature == 1.0 and "Write 7 new instructions" in \
        calls[0][0][0][1]["content"]


class _Handler(BaseHTTPRequestHandler):
    requests: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        _Handler.requests.append((self.path, body))
        out = json.dumps({"id": "x", "object": "chat.completion", "model": body["model"],
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": REPLY}}],
                          "usage": {"prompt_tokens": 10, "completion_tokens": 20}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.requests = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()
    srv.server_close()


def test_local_openai_server_round_trip(tmp_path, server):
    pytest.importorskip("httpx")
    cfg = _cfg(tmp_path, engine="openai", model="fake-gpt", base_url=server, api_key_env="DELIA_TEST_NO_KEY")
    r = run_diversify(cfg)
    _check_result(r, cfg)
    assert (tmp_path / "out.txt").read_text().splitlines() == GOOD
    (path, body), = _Handler.requests
    assert path == "/v1/chat/completions" and body["model"] == "fake-gpt"
    assert body["temperature"] == 1.0 and body["top_p"] == 0.95 and body["max_tokens"] == 2048
    assert "anisotropic" in body["messages"][1]["content"] and SEEDS.strip() in body["messages"][1]["content"]

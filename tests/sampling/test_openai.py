"""The openai engine against a real HTTP server on 127.0.0.1: mapping, retries, backoff, failures."""

from __future__ import annotations

import socket
import time

import pytest

from delia.generation import GenParams
from delia.sampling.cache import SampleCache
from delia.sampling.engines import EngineError, RowsFailed, make_engine
from delia.sampling.run import SampleConfig, run_sample

from ..fake_openai import Server


@pytest.fixture
def server():
    made = []

    def make(*a, **kw):
        made.append(Server(*a, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def _engine(url, **kw):
    return make_engine("openai", "served-model", base_url=url, backoff=0.01, **kw)


def test_request_mapping_and_key_from_env(server, monkeypatch):
    monkeypatch.setenv("MY_KEY", "sk-test")
    s = server()
    eng = _engine(s.url, api_key_env="MY_KEY", concurrency=1)
    params = GenParams(max_new_tokens=7, temperature=0.7, top_p=0.9, seed=5, stop=["\n\n"])
    gens = eng.generate([[{"role": "user", "content": "hi"}], "raw prefix"], params)
    assert [g.text for g in gens] == ["echo: hi", "completion of raw prefix"]
    assert [g.finish_reason for g in gens] == ["stop", "length"]
    assert (gens[0].n_prompt_tokens, gens[0].n_new_tokens) == (11, 4)
    paths = sorted(r[0] for r in s.requests)
    assert paths == ["/v1/chat/completions", "/v1/completions"]
    chat = next(r for r in s.requests if r[0].endswith("chat/completions"))
    assert chat[1] == {"model": "served-model", "max_tokens": 7, "temperature": 0.7, "top_p": 0.9, "seed": 5,
                       "stop": ["\n\n"], "messages": [{"role": "user", "content": "hi"}]}
    assert chat[2]["Authorization"] == "Bearer sk-test"


def test_500_then_success_is_retried(server):
    s = server(script=[(500, {}), (503, {})])
    gens = _engine(s.url, concurrency=1).generate([[{"role": "user", "content": "x"}]], GenParams())
    assert gens[0].text == "echo: x" and len(s.requests) == 3


def test_429_waits_for_retry_after(server):
    s = server(script=[(429, {"Retry-After": "0.3"})])
    gens = _engine(s.url, concurrency=1).generate([[{"role": "user", "content": "x"}]], GenParams())
    assert gens[0].text == "echo: x" and len(s.requests) == 2
    assert s.times[1] - s.times[0] >= 0.29  # the server's Retry-After, not our 0.01 s backoff


def test_retries_exhausted_and_4xx_fail_only_their_rows(server):
    s = server(fail_when=lambda body: body["messages"][-1]["content"] == "bad")
    prompts = [[{"role": "user", "content": c}] for c in ("a", "bad", "c")]
    seen = []
    with pytest.raises(RowsFailed) as e:
        _engine(s.url, concurrency=2).generate(prompts, GenParams(), on_batch=lambda i, g: seen.extend(i))
    assert list(e.value.failed) == [1] and "HTTP 400" in e.value.failed[1]
    assert sorted(seen) == [0, 2] and e.value.results[1] is None
    assert len([r for r in s.requests if r[1]["messages"][-1]["content"] == "bad"]) == 1  # 400 is not retried
    s2 = server(script=[(502, {})] * 10)
    with pytest.raises(RowsFailed, match="HTTP 502.*gave up after 3 attempts"):
        _engine(s2.url, concurrency=1, max_retries=2).generate(prompts[:1], GenParams())


def _dead_url() -> str:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/v1"


def test_run_sample_over_http_then_dead_server_keeps_the_cache(server, alpaca_file, tmp_path):
    s = server()
    queries, out = alpaca_file(5), tmp_path / "cache.jsonl"
    cfg = SampleConfig(out=str(out), queries=str(queries), engine="openai", model="served-model",
                       engine_options={"base_url": s.url, "backoff": 0.01, "concurrency": 2})
    summary = run_sample(cfg, progress=False)
    assert (summary.done, summary.failed) == (5, 0)
    # one-shot prompts went over the wire: user q, assistant reference, user q
    first = next(b for _, b, _ in s.requests if b["messages"][0]["content"].startswith("Question number 0"))
    assert [m["role"] for m in first["messages"]] == ["user", "assistant", "user"]
    before = out.read_bytes()
    more = alpaca_file(8, name="more.jsonl")
    cfg2 = SampleConfig(out=str(out), queries=str(more), engine="openai", model="served-model",
                        engine_options={"base_url": _dead_url(), "backoff": 0.01, "max_retries": 2})
    t0 = time.monotonic()
    with pytest.raises(EngineError, match=r"cannot connect to http://127\.0\.0\.1:\d+/v1.*gave up after 3 attempts"):
        run_sample(cfg2, progress=False)
    assert time.monotonic() - t0 < 20  # stops instead of retrying all rows one by one
    assert out.read_bytes() == before
    with SampleCache(out) as c:
        assert c.rows == 5

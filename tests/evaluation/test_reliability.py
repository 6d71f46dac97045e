"""The eval stage under crashes and contention: torn cache lines, a locked output, nothing written on bad input."""

from __future__ import annotations

import json
import logging

import pytest

from delia.config import load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.run import run_eval
from delia.files import LockError, locked_dir
from delia.generation import Generation

ROWS = [{"id": f"t{i}", "src": f"Halló heimur {i}", "ref": f"Hello world {i}", "src_lang": "is", "tgt_lang": "en"}
        for i in range(3)]


def _data(tmp_path):
    f = tmp_path / "t.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return f


def _cfg(tiny_dir, data, out):
    return load_config(EvalConfig, overrides=[f"model={tiny_dir}", f"data={data}", f"out={out}", "task=translation",
                                              "bootstrap=0", "analysis.score=off", "dtype=fp32"])


def _fake(calls):
    def gen(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        calls.append(len(prompts))
        out = [Generation("Hello world", 10, 2, "stop") for _ in prompts]
        if on_batch:
            on_batch(list(range(len(out))), out)
        return out
    return gen


def test_torn_last_cache_line_is_cut_before_appending(tiny_dir, tmp_path, monkeypatch, caplog):
    calls: list[int] = []
    monkeypatch.setattr("delia.generation.generate", _fake(calls))
    out = tmp_path / "o"
    cfg = _cfg(tiny_dir, _data(tmp_path), out)
    run_eval(cfg)
    cache = out / "generations.jsonl"
    lines = cache.read_text().splitlines()
    assert calls == [3] and len(lines) == 3
    # a kill during the write of row 3: rows 1-2 whole, row 3 half written without its newline
    cache.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    with caplog.at_level(logging.WARNING):
        run_eval(cfg)
    assert "cut a torn last line (20 bytes" in caplog.text
    assert calls == [3, 1]  # only the torn row is generated again
    rows = [json.loads(x) for x in cache.read_text().splitlines()]  # every line parses: nothing fused
    assert len(rows) == 3 and len({r["key"] for r in rows}) == 3


def test_a_second_eval_on_one_output_is_refused(tiny_dir, tmp_path):
    out = tmp_path / "o"
    with locked_dir(out):
        with pytest.raises(LockError, match="another delia process is writing this evaluation output"):
            run_eval(_cfg(tiny_dir, _data(tmp_path), out))


def test_bad_input_leaves_no_output_directory(tiny_dir, tmp_path):
    from delia.data import DataError

    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(ROWS[0]) + "\n" + '{"src": "x", "ref": ""}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2: ref: empty"):
        run_eval(_cfg(tiny_dir, bad, tmp_path / "o"))
    assert not (tmp_path / "o").exists()

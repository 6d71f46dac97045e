"""Everything delia writes, delia reads: line separators inside strings, on every writer and reader."""

from __future__ import annotations

import json

import pytest

from delia.data import read_records, write_records
from delia.data.jsonl import AppendLog, dumps_line, parse_json, read_text_lines

SEPS = "a\u2028b\u2029c\x85d"  # JSON allows them raw inside strings; str.splitlines breaks lines at them


def test_dumps_line_escapes_separators_and_round_trips():
    line = dumps_line({"t": SEPS, "é": "ü"})
    assert line == '{"t": "a\\u2028b\\u2029c\\u0085d", "é": "ü"}'  # other text stays readable UTF-8
    assert line.splitlines() == [line] and json.loads(line) == {"t": SEPS, "é": "ü"}


def test_parse_json_reasons():
    assert parse_json('{"a": 1, "a": 2}')[1:] == ("a", "key given twice in one object")
    assert parse_json('{"a": ["\\ud800"]}')[1:] == ("a[0]", "lone surrogate U+D800 (not valid Unicode text)")
    assert parse_json("[" * 100000)[2] == "invalid JSON: nested too deeply to parse"
    assert parse_json("[" * 70 + "]" * 70)[2] == "nested deeper than 64 levels"
    assert parse_json('{"a": 1')[2].startswith("invalid JSON: Expecting")


def test_a_raw_separator_inside_a_row_does_not_split_it(tmp_path):
    raw = tmp_path / "raw.jsonl"  # as another tool (or an older delia) may write it
    rows = [{"query": f"q{i} {SEPS}", "response": SEPS} for i in range(3)]
    raw.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert "\u2028" in raw.read_text() and len(raw.read_text().splitlines()) > 3
    recs = read_records(raw)
    assert [r.line for r in recs] == [1, 2, 3] and recs[0].fields["query"] == f"q0 {SEPS}"
    out = tmp_path / "out.jsonl"
    write_records(out, recs)
    text = out.read_text(encoding="utf-8")
    assert not any(c in text for c in "\u2028\u2029\x85") and len(text.splitlines()) == 3
    assert [r.fields for r in read_records(out)] == [r.fields for r in recs]
    out_json = tmp_path / "out.json"
    write_records(out_json, recs)
    assert "\u2028" not in out_json.read_text() and len(read_records(out_json)) == 3


def test_build_output_trains(tmp_path):
    """`delia build` on rows holding separators writes a file that training reads back row for row."""
    from delia.mixing import BuildConfig, build
    from delia.training.data import read_training_records

    from ..mixing.conftest import cache_rows, downstream_rows, write_jsonl

    down = downstream_rows(4)
    for r in down:
        r["messages"][1]["content"] += SEPS
    cache = cache_rows(8)
    cache[0]["messages"][1]["content"] = SEPS
    d = write_jsonl(tmp_path / "d.jsonl", down)
    c = write_jsonl(tmp_path / "c.jsonl", cache)
    build(BuildConfig(downstream=str(d), diverse=str(c), ratio=2, out=str(tmp_path / "o"), model=""))
    text = (tmp_path / "o" / "train.jsonl").read_text(encoding="utf-8")
    assert not any(ch in text for ch in "\u2028\u2029\x85")
    recs = read_training_records(tmp_path / "o" / "train.jsonl")
    assert len(recs) == 12 and sum(SEPS in r.response for r in recs) >= 4


def test_subset_step_keeps_rows_whole(tmp_path):
    from delia.experiments.stages import run_step

    src = tmp_path / "d.jsonl"
    src.write_text("".join(json.dumps({"query": f"{i}{SEPS}"}, ensure_ascii=False) + "\n" for i in range(4)),
                   encoding="utf-8")
    out = tmp_path / "s"
    out.mkdir()
    assert run_step("subset", {"path": str(src), "n": 3}, {}, out) == {"rows": 3}
    assert (out / "data.jsonl").read_bytes() == b"".join(src.read_bytes().split(b"\n")[i] + b"\n" for i in range(3))


def test_text_lines_split_at_newline_only(tmp_path):
    p = tmp_path / "i.txt"
    p.write_bytes(f"one {SEPS}\r\ntwo\n".encode())
    assert read_text_lines(p) == [f"one {SEPS}", "two"]


def test_append_log_writes_escaped_rows(tmp_path):
    path = tmp_path / "c.jsonl"
    log = AppendLog(path)
    log.open()
    log.append([{"key": "a", "text": SEPS}])
    log.close()
    assert path.read_text(encoding="utf-8").splitlines() == [dumps_line({"key": "a", "text": SEPS})]
    with pytest.raises(BlockingIOError, match="another delia process"):
        held = AppendLog(path)
        held.open()
        AppendLog(path).open()

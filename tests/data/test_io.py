from __future__ import annotations

import json

import pytest

from delia.data import DataError, read_records, validate_file, write_records

FILES = {
    "halu/train.jsonl": "messages",
    "halu/valid.jsonl": "messages",
    "halu/test.jsonl": "halu_test",
    "diverse/alpaca_5000.jsonl": "alpaca",
    "wmt21/newstest2021.en-is.jsonl": "translation",
    "wmt21/newstest2021.is-en.jsonl": "translation",
    "wmt21/tell-dev-en-is.jsonl": "query_response",
    "wmt21/tell-test-is-en.jsonl": "query_response",
}


def _sample(shared_data, rel, n=25):
    lines = (shared_data / rel).read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(x) for x in lines]


@pytest.mark.parametrize("rel,fmt", sorted(FILES.items()))
def test_every_reader_round_trips_shared_data(shared_data, tmp_path, rel, fmt):
    rows = _sample(shared_data, rel)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    recs = read_records(src)
    assert [r.fmt for r in recs] == [fmt] * len(rows)
    assert [r.line for r in recs] == list(range(1, len(rows) + 1))
    assert all(r.source == str(src) and r.id == f"in:{r.line}" for r in recs)
    out = tmp_path / "out.jsonl"
    assert write_records(out, recs) == len(rows)
    back = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert back == rows  # lossless, key for key
    again = read_records(out)
    assert [r.messages for r in again] == [r.messages for r in recs]


def test_normalised_messages(shared_data, tmp_path):
    alp = read_records(shared_data / "diverse/alpaca_5000.jsonl")
    assert len(alp) == 5000
    first = alp[0]
    assert first.messages == [
        {"role": "user", "content": first.fields["instruction"] + "\n\n" + first.fields["input"]},
        {"role": "assistant", "content": first.fields["output"]},
    ]
    test = read_records(shared_data / "halu/test.jsonl")
    assert len(test) == 300 and test[0].response is None and test[0].fields["label"] in ("yes", "no")
    tr = read_records(shared_data / "wmt21/newstest2021.en-is.jsonl")
    assert tr[0].prompt_messages[0]["content"] == tr[0].fields["src"] and tr[0].response == tr[0].fields["ref"]


def test_alpaca_json_array_reports_lines(tmp_path):
    p = tmp_path / "a.json"
    p.write_text('[\n {"instruction": "x", "input": "", "output": "y"},\n\n {"instruction": "", "output": "z"}\n]\n')
    problems = validate_file(p)
    assert [str(x) for x in problems] == [f"{p}:4: instruction: empty"]
    recs = read_records(p, skip_invalid=True)
    assert len(recs) == 1 and recs[0].line == 2
    out = tmp_path / "b.json"
    write_records(out, recs)
    assert json.loads(out.read_text()) == [{"instruction": "x", "input": "", "output": "y"}]


def test_conversion_between_formats(tmp_path):
    p = tmp_path / "qr.jsonl"
    p.write_text('{"query": "hi", "response": "hello", "id": "a1"}\n')
    recs = read_records(p)
    out = tmp_path / "m.jsonl"
    write_records(out, recs, fmt="messages")
    assert json.loads(out.read_text()) == {
        "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "id": "a1"}
    with pytest.raises(ValueError, match="only halu_test rows"):
        write_records(tmp_path / "x.jsonl", recs, fmt="halu_test")


BAD = [
    ('{"messages": [{"role": "user", "content": "a"}]}\n{"messages": [{"role": "bot", "content": "b"}]}\n',
     ":2: messages[0].role: 'bot' is not one of system, user, assistant, tool"),
    ('{"messages": []}\n', ":1: messages: expected a non-empty list"),
    ('{"messages": [{"role": "user"}]}\n', ":1: messages[0].content: missing or not a string"),
    ('{"context": "c", "label": "maybe"}\n', ":1: label: expected 'yes' or 'no', got 'maybe'"),
    ('{"src": "a", "ref": 3}\n', ":1: ref: expected a string, got int"),
    ('{"foo": 1}\n', ":1: cannot tell the format from keys ['foo']"),
    ('[1, 2]\n', ":1: cannot tell the format"),
    ('{"query": "a", "id": "x"}\n{"query": "b", "id": "x"}\n', ":2: id: duplicate id 'x' (first on line 1)"),
    ('\n\n', ":1: file holds no rows"),
    ('{"query": "a"}\n{"query": "b"\n', ":2: invalid JSON: Expecting ',' delimiter"),
]


@pytest.mark.parametrize("text,expected", BAD)
def test_malformed_inputs_give_documented_errors(tmp_path, text, expected):
    p = tmp_path / "bad.jsonl"
    p.write_text(text)
    problems = [str(x) for x in validate_file(p)]
    assert len(problems) == 1 and problems[0].startswith(str(p) + expected), problems
    with pytest.raises(DataError) as e:
        read_records(p)
    assert expected in str(e.value)


def test_skip_invalid_reports_which(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"query": "a"}\n{"query": 5}\n{"query": "c"}\n{oops\n')
    skipped = []
    recs = read_records(p, skip_invalid=True, skipped=skipped)
    assert [r.fields["query"] for r in recs] == ["a", "c"]
    assert [(s.line, s.field) for s in skipped] == [(2, "query"), (4, None)]


def test_forced_format_and_missing_file(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"instruction": "a", "output": "b"}\n')
    (problem,) = validate_file(p, fmt="query_response")
    assert str(problem) == (f"{p}:1: query: missing: this row has the keys of the alpaca format, but the file is "
                            f"read as query_response (as asked); one file holds one format")
    missing = tmp_path / "nope.jsonl"
    assert [str(x) for x in validate_file(missing)] == [f"{missing}: file not found"]
    with pytest.raises(FileNotFoundError, match="nope.jsonl: file not found"):
        read_records(missing)

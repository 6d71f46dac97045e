"""The one generation cache's policies: strict (sample) vs skipping bad rows (eval), required fields, kept rows."""

from __future__ import annotations

import json
import logging

import pytest

from delia.data.records import DataError
from delia.gencache import CacheError, GenerationCache


def _row(k: str, **kw) -> dict:
    return {"key": k, "text": f"t{k}", **kw}


def test_a_bad_middle_row_is_an_error_or_skipped_with_its_line(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_row("a")) + "\n{not json\n" + json.dumps({"text": "no key"}) + "\n"
                    + json.dumps(_row("b")) + "\n")
    with pytest.raises(DataError, match=r"c.jsonl:2: invalid JSON.*\n.*c.jsonl:3: key: row has no string key"):
        GenerationCache(path).open()
    with caplog.at_level(logging.WARNING), GenerationCache(path, bad_rows="skip", keep_rows=True) as c:
        assert c.keys == {"a", "b"} and c.rows_by_key["b"] == _row("b")
    assert "c.jsonl:2: invalid JSON" in caplog.text and "c.jsonl:3: key: row has no string key" in caplog.text


def test_required_fields_decide_whether_a_last_line_without_newline_is_torn(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_row("a")) + "\n" + json.dumps({"key": "b"}))  # parses, but lacks "text"
    with GenerationCache(path, required=("text",), bad_rows="skip") as c:
        assert c.keys == {"a"}
    assert path.read_text() == json.dumps(_row("a")) + "\n"
    path.write_text(json.dumps(_row("a")) + "\n" + json.dumps(_row("b")))
    with GenerationCache(path, required=("text",)) as c:
        assert c.keys == {"a", "b"}
    assert path.read_text().endswith("\n")


def test_appended_rows_are_kept_and_the_last_of_a_key_wins(tmp_path):
    path = tmp_path / "c.jsonl"
    with GenerationCache(path, keep_rows=True) as c:
        c.append([_row("a"), _row("b")])
        c.append([_row("a", text="again")])
        assert c.rows == 3 and c.rows_by_key["a"]["text"] == "again"
    with GenerationCache(path, keep_rows=True) as c:
        assert c.rows_by_key["a"]["text"] == "again" and len(c.keys) == 2
        with pytest.raises(CacheError, match="busy here"):
            GenerationCache(path, busy="busy here").open()

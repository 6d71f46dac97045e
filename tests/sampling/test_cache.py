"""The sample cache: torn lines repaired, failed writes rolled back, one writer at a time."""

from __future__ import annotations

import errno
import json
import logging
import os

import pytest

from delia.data.records import DataError
from delia.sampling.cache import CacheError, SampleCache


def _row(k: str) -> dict:
    return {"id": k, "key": k, "messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}


def _lines(path) -> list[str]:
    return path.read_text().splitlines()


def test_append_then_reopen_sees_every_key(tmp_path):
    path = tmp_path / "sub" / "c.jsonl"
    with SampleCache(path) as c:
        assert c.keys == set()
        c.append([_row("a"), _row("b")])
        c.append([_row("c")])
    with SampleCache(path) as c:
        assert c.keys == {"a", "b", "c"} and c.rows == 3
    assert path.read_bytes().endswith(b"\n")


def test_torn_last_line_is_cut_and_logged(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    good = json.dumps(_row("a")) + "\n" + json.dumps(_row("b")) + "\n"
    path.write_text(good + json.dumps(_row("c"))[:25])  # a write killed half-way
    with caplog.at_level(logging.WARNING), SampleCache(path) as c:
        assert c.keys == {"a", "b"}
        c.append([_row("c")])
    assert "cut a torn last line (25 bytes" in caplog.text
    assert [json.loads(line)["key"] for line in _lines(path)] == ["a", "b", "c"]


def test_complete_last_row_without_newline_is_kept(tmp_path, caplog):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_row("a")) + "\n" + json.dumps(_row("b")))
    with caplog.at_level(logging.WARNING), SampleCache(path) as c:
        assert c.keys == {"a", "b"}
        c.append([_row("c")])
    assert "added one (row kept)" in caplog.text
    assert [json.loads(line)["key"] for line in _lines(path)] == ["a", "b", "c"]


def test_corruption_in_the_middle_is_reported_not_repaired(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(json.dumps(_row("a")) + "\n{broken\n" + json.dumps({"id": 1}) + "\n")
    with pytest.raises(DataError) as e:
        SampleCache(path).open()
    assert f"{path}:2: invalid JSON" in str(e.value) and f"{path}:3: key: row has no string key" in str(e.value)
    assert path.read_text().count("\n") == 3  # untouched


def test_disk_full_rolls_back_the_batch_and_says_so(tmp_path, monkeypatch):
    path = tmp_path / "c.jsonl"
    with SampleCache(path) as c:
        c.append([_row("a")])
        before = path.read_bytes()
        real_write = os.write

        def half_then_full(fd, data):  # writes part of the batch, then the disk is full
            if len(data) > 10:
                real_write(fd, bytes(data[:10]))
                return 10
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", half_then_full)
        with pytest.raises(CacheError, match="No space left on device.*holds the 1 rows.*disk is full"):
            c.append([_row("b"), _row("c")])
        monkeypatch.setattr(os, "write", real_write)
        assert path.read_bytes() == before and c.keys == {"a"}
        c.append([_row("b")])
    with SampleCache(path) as c:
        assert c.keys == {"a", "b"}


def test_a_second_writer_is_refused(tmp_path):
    path = tmp_path / "c.jsonl"
    with SampleCache(path):
        with pytest.raises(CacheError, match="another `delia sample` is writing"):
            SampleCache(path).open()
    with SampleCache(path):  # released on close
        pass

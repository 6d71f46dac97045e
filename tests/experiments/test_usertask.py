"""TASK.yaml for `delia run`: loading, the examples in every format, what is inferred, the seeded splits."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from delia.config import ConfigError
from delia.data import DataError
from delia.experiments.usertask import (HoldoutOptions, UserTask, builtin_tasks, count, infer, label_of, load_task,
                                        read_examples, split_phrasings, split_rows)


def _write(path, rows) -> str:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def _task(**kw) -> UserTask:
    base = {"name": "t", "examples": "x.jsonl", "instruction": "Identify the language of the sentence above.",
            "format": 'Reply with a JSON object with the key "language".'}
    return UserTask(**{**base, **kw})


def test_packaged_langid_task_loads_and_is_inferred_as_json_with_a_label():
    assert "langid" in builtin_tasks()
    task = load_task("builtin:langid")
    assert task.examples == "builtin:langid/examples" and task.holdout.rows == 80 and task.paraphrase.n == 16
    rows = read_examples(task.examples)
    assert len(rows) == 120 and len({e.input for e in rows}) == 120
    info = infer(task, rows)
    assert info == {"task": "json", "keys": ["language"], "values": {"language": ["english", "icelandic"]},
                    "label_key": "language"}
    assert Counter(label_of(info, e) for e in rows) == {"english": 60, "icelandic": 60}
    assert task.method_list == ["original", "plain", "cit", "delia"]
    assert task.plain_instruction == ('Identify the language of the sentence above. Reply with a JSON object with '
                                      'one key, "language", whose value is "english" or "icelandic".')


def test_packaged_wordsense_task_has_four_balanced_labels_and_no_repeated_word():
    assert "wordsense" in builtin_tasks()
    task = load_task("builtin:wordsense")
    assert task.examples == "builtin:wordsense/examples" and task.holdout.rows == 80
    rows = read_examples(task.examples)
    assert len(rows) == 200 and len({e.id for e in rows}) == 200 and len({e.input for e in rows}) == 200
    words = [e.input.split(":", 1)[0] for e in rows]
    assert len(set(words)) == 200 and all(w.isalpha() and w.islower() for w in words)
    info = infer(task, rows)
    assert info == {"task": "json", "keys": ["category"],
                    "values": {"category": ["animal", "artifact", "food", "plant"]}, "label_key": "category"}
    assert Counter(label_of(info, e) for e in rows) == {"animal": 50, "artifact": 50, "food": 50, "plant": 50}
    assert all(e.id.startswith(f"ws-{label_of(info, e)}-") for e in rows)


def test_overrides_and_paths_relative_to_the_yaml(tmp_path):
    (tmp_path / "task").mkdir()
    _write(tmp_path / "task/ex.jsonl", [{"input": "a", "output": "x"}])
    (tmp_path / "task/t.yaml").write_text("name: t\nexamples: ex.jsonl\ninstruction: Do it.\nformat: As x.\n")
    task = load_task(tmp_path / "task/t.yaml", ["ratio=3", "holdout.rows=5"])
    assert task.examples == str(tmp_path / "task/ex.jsonl") and task.ratio == 3.0 and task.holdout.rows == 5
    with pytest.raises(ConfigError, match="holdout.rowz"):
        load_task(tmp_path / "task/t.yaml", ["holdout.rowz=5"])
    with pytest.raises(FileNotFoundError, match="builtin:nope: no packaged task.*builtin:langid"):
        load_task("builtin:nope")


@pytest.mark.parametrize("row", [
    {"id": "a", "input": "Hello there.", "output": "english"},
    {"id": "a", "messages": [{"role": "user", "content": "Hello there."}, {"role": "assistant", "content": "english"}]},
    {"id": "a", "prompt": "Hello there.", "completion": "english"},
    {"id": "a", "instruction": "Name the language.", "input": "Hello there.", "output": "english"},
    {"id": "a", "instruction": "Hello there.", "output": "english"},
])
def test_every_example_format_normalises_to_input_output(tmp_path, row):
    (e,) = read_examples(_write(tmp_path / "ex.jsonl", [row]))
    assert (e.id, e.input, e.output, e.line) == ("a", "Hello there.", "english", 1)


def test_bad_examples_name_file_line_and_field(tmp_path):
    path = _write(tmp_path / "ex.jsonl", [{"input": "a", "output": "x"}, {"input": "b"}, {"input": "a", "output": "y"},
                                          {"input": "c", "output": 3}])
    with pytest.raises(DataError) as e:
        read_examples(path)
    assert [str(p) for p in e.value.problems] == [f"{path}:2: output: missing",
                                                  f"{path}:4: output: expected a non-empty string"]
    path = _write(tmp_path / "dup.jsonl", [{"input": "a", "output": "x"}, {"input": "a", "output": "y"}])
    with pytest.raises(DataError, match=r"dup.jsonl:2: input: the same input as line 1"):
        read_examples(path)
    path = _write(tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "q"}]}])
    with pytest.raises(DataError, match=r"chat.jsonl:1: output: no reply"):
        read_examples(path)


def test_infer_kinds_and_bad_gold_outputs(tmp_path):
    rows = read_examples(_write(tmp_path / "a.jsonl", [{"input": f"s{i}", "output": ["pos", "neg"][i % 2]}
                                                      for i in range(6)]))
    assert infer(_task(), rows) == {"task": "label", "labels": ["neg", "pos"]}
    rows = read_examples(_write(tmp_path / "b.jsonl", [{"input": f"s{i}", "output": f"text {i}"} for i in range(6)]))
    assert infer(_task(), rows) == {"task": "text", "metrics": ["exact", "chrf", "bleu"]}
    objs = [{"name": f"n{i}", "kind": ["a", "b"][i % 2], "n": i % 2} for i in range(12)]
    rows = read_examples(_write(tmp_path / "c.jsonl", [{"input": f"s{i}", "output": json.dumps(o)}
                                                      for i, o in enumerate(objs)]))
    # two keys have few values: no label key is inferred unless given
    assert infer(_task(), rows) == {"task": "json", "keys": ["name", "kind", "n"],
                                    "values": {"kind": ["a", "b"], "n": ["0", "1"]}, "label_key": None}
    assert infer(_task(label_key="kind"), rows)["label_key"] == "kind"
    path = _write(tmp_path / "d.jsonl", [{"input": "s0", "output": '{"kind": "a"}'}, {"input": "s1", "output": "b"}])
    with pytest.raises(DataError, match=r"d.jsonl:2: output: not a JSON object"):
        infer(_task(task="json"), read_examples(path))
    with pytest.raises(DataError, match=r"d.jsonl:1: output: kind: 'a' is not one of \['b'\]"):
        infer(_task(task="json", keys=["kind"], values={"kind": ["b"]}), read_examples(path)[:1])
    with pytest.raises(DataError, match=r"a.jsonl:1: output: 'pos' is not one of the labels \['neg'\]"):
        infer(_task(task="label", labels=["neg"]), read_examples(str(tmp_path / "a.jsonl")))


def test_row_split_is_seeded_disjoint_and_stratified():
    labels = ["a"] * 30 + ["b"] * 10
    train, test = split_rows([object()] * 40, 10, 0, labels)
    assert sorted(train + test) == list(range(40)) and not set(train) & set(test)
    assert Counter(labels[i] for i in test) == {"a": 8, "b": 2}  # 10 x 30/40 = 7.5 -> 8 (largest remainder)
    assert split_rows([object()] * 40, 10, 0, labels) == (train, test)
    assert split_rows([object()] * 40, 10, 1, labels)[1] != test
    assert len(split_rows([object()] * 7, 3, 0, [None] * 7)[1]) == 3


def test_holdout_counts():
    assert count(0.3, 120, "rows") == 36 and count(80, 120, "rows") == 80 and count(0.25, 16, "phrasings") == 4
    with pytest.raises(ConfigError, match="holdout.rows: 0.01 of 10 holds out none"):
        count(0.01, 10, "rows")
    with pytest.raises(ConfigError, match="holdout.phrasings: 16 of 16 leaves none to train on"):
        count(16, 16, "phrasings")


def test_phrasing_split_is_seeded_and_disjoint():
    ph = [f"p{i} <sep>" for i in range(16)]
    seen, unseen = split_phrasings(ph, 4, 0)
    assert len(seen) == 12 and len(unseen) == 4 and not set(seen) & set(unseen) and set(seen) | set(unseen) == set(ph)
    assert split_phrasings(ph, 4, 0) == (seen, unseen) and split_phrasings(ph, 4, 1)[1] != unseen


def test_task_config_checks():
    with pytest.raises(ConfigError, match="give `instruction` and `format`"):
        _task(format=None)
    assert _task(format=None, instruction=None, paraphrases="p.txt").method_list == ["original", "cit", "delia"]
    with pytest.raises(ConfigError, match="'plain' trains on your instruction"):
        _task(format=None, paraphrases="p.txt", methods=["plain"])
    with pytest.raises(ConfigError, match="leave the format description out"):
        _task(instruction='Do it. Reply with a JSON object with the key "language".')
    with pytest.raises(ConfigError, match="holdout.rows: a fraction in"):
        HoldoutOptions(rows=2.5)

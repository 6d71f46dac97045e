"""`delia run`'s compiler: the data files, the generated experiment config, reruns, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from delia.config import from_dict
from delia.data import DataError
from delia.experiments.config import ExperimentConfig
from delia.experiments.taskrun import compile_task
from delia.experiments.usertask import load_task

PLAIN = ('Identify the language of the sentence above. Reply with a JSON object with one key, "language", whose '
         'value is "english" or "icelandic".')


def _lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in _lines(path)]


def test_langid_compiles_to_split_files_and_an_experiment(tmp_path):
    out = tmp_path / "run"
    c = compile_task(load_task("builtin:langid", [f"out={out}"]))
    data = out / "data"
    train, test = _jsonl(data / "train.jsonl"), _jsonl(data / "test.jsonl")
    seen, unseen = _lines(data / "instructions_seen.txt"), _lines(data / "instructions_unseen.txt")
    # rows: 40 train + 80 test, disjoint, stratified 20/20 and 40/40
    assert len(train) == 40 and len(test) == 80 and not {r["id"] for r in train} & {r["id"] for r in test}
    assert c.info["label_counts"] == {"train": {"english": 20, "icelandic": 20},
                                      "test": {"english": 40, "icelandic": 40}}
    # a training row: the template filled with the input and the user's own phrasing; the reply is the gold JSON
    row = train[0]
    assert row["messages"][0]["content"].endswith("\n\n" + PLAIN) and set(row) == {"id", "messages"}
    assert json.loads(row["messages"][1]["content"])["language"] in ("english", "icelandic")
    assert set(test[0]) == {"id", "input", "output"}
    # phrasings: 12 seen + 4 unseen, disjoint, each with the token and without the format description
    assert len(seen) == 12 and len(unseen) == 4 and not set(seen) & set(unseen)
    assert all("<sep>" in p and "JSON" not in p for p in seen + unseen)
    assert sorted(seen + unseen) == sorted(_lines(data / "paraphrases.txt"))
    info = json.loads((data / "task.json").read_text())
    assert info["phrasings"]["unseen"] == unseen and info["test_ids"] == [r["id"] for r in test]
    # the experiment: an ordinary ExperimentConfig on those files
    exp = from_dict(ExperimentConfig, yaml.safe_load((out / "experiment.yaml").read_text()))
    assert exp.data.task == "json" and exp.data.train == str(data / "train.jsonl") and exp.data.valid is None
    assert exp.grid.methods == ["original", "plain", "cit", "delia"] and exp.grid.sizes == [40]
    assert exp.build["instructions"] == str(data / "instructions_seen.txt") and exp.build["token"] == "<sep>"
    custom = exp.eval["custom"]
    assert custom["unseen_file"] == str(data / "instructions_unseen.txt")
    assert custom["instructions"] == "seen:1,unseen:2,unseen-desc:1"
    assert custom["keys"] == ["language"] and custom["label_key"] == "language"
    assert custom["token_description"].startswith("Reply with a JSON object")
    # the same task compiles to byte-identical files
    before = {p.name: p.read_bytes() for p in data.iterdir()}
    compile_task(load_task("builtin:langid", [f"out={out}"]))
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before


def test_bad_examples_write_nothing(tmp_path):
    ex = tmp_path / "ex.jsonl"
    ex.write_text('{"input": "a", "output": "x"}\n{"input": "b"}\n')
    (tmp_path / "t.yaml").write_text(f"name: t\nexamples: ex.jsonl\ninstruction: Do it.\nformat: As x.\n"
                                     f"out: {tmp_path / 'run'}\n")
    with pytest.raises(DataError, match=rf"{ex}:2: output: missing"):
        compile_task(load_task(tmp_path / "t.yaml"))
    assert not (tmp_path / "run").exists()


def test_paraphrase_file_must_hold_the_token(tmp_path):
    (tmp_path / "p.txt").write_text("Say it <sep>.\nSay it plainly.\n")
    with pytest.raises(DataError, match=r"p.txt:2: instruction: instruction does not contain <sep>"):
        compile_task(load_task("builtin:langid", [f"out={tmp_path / 'run'}", f"paraphrases={tmp_path / 'p.txt'}"]))
    assert not (tmp_path / "run").exists()


def test_llm_paraphrases_are_reused_on_a_rerun(tmp_path):
    calls = []

    def fake(prompts, params):
        calls.append(len(prompts))
        words = ["Tell", "Say", "Name", "Give", "State", "Report", "Decide", "Find"]
        return [json.dumps([f"{w} which language sentence {i} {j} is in, as <sep>." for j, w in enumerate(words)])
                for i in range(len(prompts))]

    over = [f"out={tmp_path / 'run'}", "paraphrase.engine=llm", "paraphrase.n=8", "paraphrase.llm.per_request=8",
            "paraphrase.llm.requests_per_round=1", "paraphrase.filters.max_similarity=0.99", "holdout.phrasings=2"]
    c = compile_task(load_task("builtin:langid", over), complete=fake)
    assert calls == [1] and len(c.info["phrasings"]["unseen"]) == 2
    # the rerun reads OUT/data/paraphrases.txt instead of asking the endpoint again (its steps stay valid)
    compile_task(load_task("builtin:langid", over), complete=fake)
    assert calls == [1]
    # a changed paraphrase setting asks again
    compile_task(load_task("builtin:langid", [*over, "paraphrase.seed=1"]), complete=fake)
    assert calls == [1, 1]


def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path):
    from ..clirun import run_cli

    ex = tmp_path / "ex.jsonl"
    ex.write_text('{"input": "a", "output": "x"}\n{"input": "b", "output": ""}\n')
    (tmp_path / "t.yaml").write_text(f"name: t\nexamples: ex.jsonl\ninstruction: Do it.\nformat: As x.\n"
                                     f"out: {tmp_path / 'run'}\n")
    code, out = run_cli(["run", str(tmp_path / "t.yaml")])
    assert code == 2 and f"{ex}:2: output: expected a non-empty string" in out and "Traceback" not in out
    assert not (tmp_path / "run").exists()
    ex.write_text('{"input": "a", "output": "x"}\n{"input": "b", "output": "y"}\n')
    code, out = run_cli(["run", str(tmp_path / "t.yaml"), "holdout.rows=5"])
    assert code == 2 and "holdout.rows: 5 of 2 leaves none to train on" in " ".join(out.split())

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
    valid = _jsonl(data / "valid.jsonl")
    # rows: 30 train + 10 validation + 80 test, disjoint, stratified 15/15, 5/5 and 40/40
    ids = [{r["id"] for r in rows} for rows in (train, valid, test)]
    assert [len(x) for x in ids] == [30, 10, 80] and len(set().union(*ids)) == 120
    assert c.info["label_counts"] == {"train": {"english": 15, "icelandic": 15},
                                      "valid": {"english": 5, "icelandic": 5},
                                      "test": {"english": 40, "icelandic": 40}}
    assert c.info["valid_ids"] == [r["id"] for r in valid]
    # a training row: the template filled with the input and the user's own phrasing; the reply is the gold JSON
    row = train[0]
    assert row["messages"][0]["content"].endswith("\n\n" + PLAIN) and set(row) == {"id", "messages"}
    assert json.loads(row["messages"][1]["content"])["language"] in ("english", "icelandic")
    assert set(test[0]) == {"id", "input", "output"}
    # phrasings: 9 seen + 3 validation + 4 unseen, disjoint, each with the token and without the format description
    vphr = _lines(data / "instructions_valid.txt")
    assert len(seen) == 9 and len(vphr) == 3 and len(unseen) == 4 and len(set(seen) | set(vphr) | set(unseen)) == 16
    assert all("<sep>" in p and "JSON" not in p for p in seen + vphr + unseen)
    assert sorted(seen + vphr + unseen) == sorted(_lines(data / "paraphrases.txt"))
    info = json.loads((data / "task.json").read_text())
    assert info["phrasings"]["unseen"] == unseen and info["test_ids"] == [r["id"] for r in test]
    # the experiment: an ordinary ExperimentConfig on those files
    exp = from_dict(ExperimentConfig, yaml.safe_load((out / "experiment.yaml").read_text()))
    assert exp.data.task == "json" and exp.data.train == str(data / "train.jsonl") and exp.data.valid is None
    assert exp.grid.methods == ["original", "plain", "cit", "delia"] and exp.grid.sizes == [30]
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


def test_validation_split_is_disjoint_from_the_test_and_drives_every_tuned_method(tmp_path):
    from delia.experiments.plan import expand

    out = tmp_path / "run"
    c = compile_task(load_task("builtin:langid", [f"out={out}"]))
    data = out / "data"
    info = json.loads((data / "task.json").read_text())
    valid_ids, test_ids, train_ids = set(info["valid_ids"]), set(info["test_ids"]), set(info["train_ids"])
    assert valid_ids and not valid_ids & test_ids and not valid_ids & train_ids
    ph = info["phrasings"]
    assert ph["valid"] and not set(ph["valid"]) & set(ph["unseen"]) and not set(ph["valid"]) & set(ph["seen"])
    # the validation prompts: the validation rows under the validation phrasings, scored as the test is
    v = c.experiment["train"]["validation"]
    assert v["eval"]["data"] == str(data / "valid.jsonl")
    assert v["eval"]["custom"]["unseen_file"] == str(data / "instructions_valid.txt")
    assert v["eval"]["custom"]["instructions"] == "unseen:all" and v["eval"]["custom"]["label_key"] == "language"
    # the step budget is sized by the data: at least 40 optimizer steps of 8 rows, not 2 epochs (8 steps)
    assert c.experiment["train"]["epochs"] * -(-30 // 8) >= 40
    # every tuned method validates; `plain` (no token) reads the validation phrasings with the format written out
    exp = from_dict(ExperimentConfig, yaml.safe_load((out / "experiment.yaml").read_text()))
    plan = expand(exp)
    trains = {r.method: r.steps["train"] for r in plan.runs if "train" in r.steps}
    assert set(trains) == {"plain", "cit", "delia"}
    for method, step in trains.items():
        spec = step.resolved["validation"]["eval"]["custom"]["instructions"]
        assert spec == ("unseen-desc:all" if method == "plain" else "unseen:all")
        assert "data" not in step.resolved["validation"]["eval"]  # named by content, not by path
        assert step.fingerprint["validation"]["validation.eval.data"]
    assert exp.drift == {"queries": 32, "max_new_tokens": 128}  # drift on by default


def test_validation_prompts_are_sized_by_the_validation_rows(tmp_path):
    from delia.experiments.taskrun import valid_phrasings_per_row

    # about 40 prompts: 10 rows under all 3 phrasings, 30 rows under 1 each (in turn), never fewer than 1
    assert valid_phrasings_per_row(10, 3) == 3 and valid_phrasings_per_row(30, 3) == 1
    assert valid_phrasings_per_row(20, 3) == 2 and valid_phrasings_per_row(400, 5) == 1
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'a'}", "holdout.rows=20"]))
    assert c.info["valid_rows"] == 25  # 100 rows on the training side: a quarter validates
    assert c.experiment["train"]["validation"]["eval"]["custom"]["instructions"] == "unseen:2"


def test_the_teacher_forced_analyses_are_off_unless_asked(tmp_path):
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'a'}"]))
    assert c.experiment["eval"]["analysis"] == {"score": "off"}
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'b'}", "eval.analysis.score=on"]))
    exp = from_dict(ExperimentConfig, yaml.safe_load((tmp_path / "b" / "experiment.yaml").read_text()))
    assert exp.eval["analysis"]["score"] in ("on", True)  # YAML's `on`; the eval config reads it as "on"


def test_the_test_budget_floor_is_set_only_when_the_task_gives_no_budget(tmp_path):
    from delia.experiments.taskrun import EVAL_BUDGET_FLOOR
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'a'}"]))  # langid gives max_new_tokens 32
    assert c.experiment["eval"]["generation"] == {"max_new_tokens": 32}
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'b'}", "eval.generation.max_new_tokens=null"]))
    assert c.experiment["eval"]["generation"] == {"max_new_tokens": None, "budget_floor": EVAL_BUDGET_FLOOR}
    exp = from_dict(ExperimentConfig, yaml.safe_load((tmp_path / "b" / "experiment.yaml").read_text()))
    assert exp.eval["generation"]["budget_floor"] == 64


def test_validation_files_are_hashed_by_content(tmp_path):
    from delia.experiments.plan import expand

    def keys(out):
        compile_task(load_task("builtin:langid", [f"out={out}"]))
        exp = from_dict(ExperimentConfig, yaml.safe_load((out / "experiment.yaml").read_text()))
        return {r.method: json.dumps([r.steps["train"].resolved, r.steps["train"].fingerprint], sort_keys=True)
                for r in expand(exp).runs if "train" in r.steps}

    a, b = keys(tmp_path / "a"), keys(tmp_path / "b")
    assert a == b  # another directory, the same content: the same training config and validation digests
    c = compile_task(load_task("builtin:langid", [f"out={tmp_path / 'c'}", "holdout.seed=3"]))
    exp = from_dict(ExperimentConfig, yaml.safe_load((tmp_path / "c" / "experiment.yaml").read_text()))
    assert c.info["valid_ids"] != json.loads((tmp_path / "a/data/task.json").read_text())["valid_ids"]
    assert {json.dumps([r.steps["train"].resolved, r.steps["train"].fingerprint], sort_keys=True)
            for r in expand(exp).runs if "train" in r.steps}.isdisjoint(a.values())


def test_no_validation_when_asked(tmp_path):
    out = tmp_path / "run"
    c = compile_task(load_task("builtin:langid", [f"out={out}", "holdout.valid_rows=0", "holdout.valid_phrasings=0"]))
    assert "validation" not in c.experiment["train"] and c.info["valid_ids"] == []
    assert not (out / "data" / "valid.jsonl").exists() and c.info["train_rows"] == 40


def _task(tmp_path, outputs: list[str], **extra) -> Path:
    ex = tmp_path / "ex.jsonl"
    ex.write_text("".join(json.dumps({"input": f"row {i}", "output": o}) + "\n" for i, o in enumerate(outputs)))
    body = "".join(f"{k}: {v}\n" for k, v in extra.items())
    (tmp_path / "t.yaml").write_text(f"name: t\nexamples: ex.jsonl\ninstruction: Do it.\nformat: As x.\n"
                                     f"out: {tmp_path / 'run'}\n{body}")
    return tmp_path / "t.yaml"


def test_a_task_too_small_to_validate_says_how_many_rows_it_needs(tmp_path):
    from delia.config import ConfigError

    with pytest.raises(ConfigError, match=r"holdout.valid_rows: .* both sides need at least 2 \(give at least 4"):
        compile_task(load_task(_task(tmp_path, ["a", "b", "a", "b", "a"], holdout="{rows: 2}")))
    assert not (tmp_path / "run").exists()


def test_a_validation_set_with_one_class_is_refused(tmp_path):
    # 2 of one label among 30: the stratified validation split of 7 rows gets none of it
    outputs = ["no"] * 28 + ["yes"] * 2
    path = _task(tmp_path, outputs, task="label", holdout="{rows: 0.2, valid_rows: 0.25}")
    with pytest.raises(DataError, match=r"ex.jsonl:\d+: output: the validation rows hold one label only"):
        compile_task(load_task(path))
    assert not (tmp_path / "run").exists()


def test_a_budget_smaller_than_a_gold_reply_is_refused(tmp_path):
    # the longest gold reply (line 7) is ~20 tokens; a budget of 8 would cut it (and every reply like it)
    outputs = ["yes", "no"] * 3 + ["no, because " + "the sentence is long " * 4] + ["yes", "no"] * 6
    path = _task(tmp_path, outputs, task="text", eval="{generation: {max_new_tokens: 8}}")
    with pytest.raises(DataError, match=r"ex.jsonl:7: output: this gold reply is \d+ tokens, and the task's "
                                        r"eval.generation.max_new_tokens is 8"):
        compile_task(load_task(path))
    assert not (tmp_path / "run").exists()
    path = _task(tmp_path, outputs, task="text", eval="{generation: {max_new_tokens: 64}}")
    assert compile_task(load_task(path), write=False).experiment["eval"]["generation"] == {"max_new_tokens": 64}

"""The task registry: names validate without importing plug-ins, unknown names suggest close ones, and the
paper's tasks keep their planner behaviour behind capabilities."""

import sys

import pytest

from delia.config import ConfigError, load_config
from delia.evaluation.config import EvalConfig
from delia.task import TASKS, check_task, get_task


def test_unknown_task_suggests_close_names():
    with pytest.raises(ConfigError, match="unknown task 'lable'; did you mean 'label'"):
        load_config(EvalConfig, overrides=["data=x", "out=y", "task=lable"])
    from delia.experiments.config import DataConfig

    with pytest.raises(ConfigError, match="data.task: unknown task 'halo'"):
        DataConfig(task="halo")
    assert set(TASKS) == {"halu", "translation", "json", "label", "text"}


def test_checking_a_name_imports_no_plugin():
    import subprocess

    code = ("import sys; from delia.task import check_task; check_task('label'); "
            "print(any(m.startswith('delia.tasks') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_capabilities_and_planner_facts():
    halu, tr, lab = get_task("halu"), get_task("translation"), get_task("label")
    assert halu.supports("special_token") and halu.supports("seen_from_training") and not tr.supports("heldout")
    assert tr.train_transform == "translation_chat" and tr.build_fields == {"token": ""}
    assert halu.train_transform is None and lab.train_transform is None
    assert halu.leakage_keys({"halu": {"keys": ["a"]}}) == ["a"] and halu.leakage_keys({}) is None
    assert tr.leakage_keys({}) == [] and get_task("json").leakage_keys({"custom": {"keys": ["k"]}}) == ["k"]
    assert get_task("json").instruction_files({"custom": {"seen_file": "s.txt"}}) == {"custom": {"seen_file": "s.txt"}}
    assert {s.name for s in halu.metric_schema() if s.robustness} == {"task_valid", "format_accuracy"}
    assert [s.name for s in get_task("text").metric_schema()] == ["task_valid", "exact", "chrf", "bleu"]
    assert check_task("json") == "json"


def test_custom_options_validate():
    with pytest.raises(ConfigError, match="custom tasks have seen, unseen and own"):
        load_config(EvalConfig, overrides=["data=x", "out=y", "task=label", "custom.instructions=explicit"])
    with pytest.raises(ConfigError, match="custom.metrics"):
        load_config(EvalConfig, overrides=["data=x", "out=y", "task=text", "custom.metrics=[rouge]"])
    cfg = load_config(EvalConfig, overrides=["data=x", "out=y", "task=label", "custom.labels=[a, b]"])
    assert cfg.custom.labels == ["a", "b"] and cfg.custom.template == "{context}\n\n{instruction}"
    assert load_config(EvalConfig, overrides=["data=x", "out=y"]).custom is None  # halu hashes unchanged


def test_custom_experiment_plans_its_eval_steps(tmp_path):
    """A label experiment: eval steps carry `custom`, its phrasing files are hashed by content, the validation
    evaluation reads the rows' own phrasings with the same template; halu-only methods fail at planning."""
    import json

    from delia.config import from_dict
    from delia.experiments.config import ExperimentConfig
    from delia.experiments.plan import expand

    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps({"messages": [{"role": "user", "content": f"t{i}\n# route <sep>"},
                                                      {"role": "assistant", "content": "bug"}]}) + "\n"
                             for i in range(3)))
    test.write_text(json.dumps({"input": "x", "output": "bug"}) + "\n")
    seen = tmp_path / "seen.txt"
    seen.write_text("route <sep>\n")
    custom = {"template": "{context}\n# {instruction}", "seen_file": str(seen), "instructions": "seen:1"}
    exp = from_dict(ExperimentConfig, dict(grid={"methods": ["original", "cit"], "sizes": [2], "ratios": [1.0], "seeds": [1]},
                           data={"task": "label", "train": str(train), "test": str(test), "valid": str(train)},
                           eval={"custom": custom}, out=str(tmp_path / "exp")))
    steps = [s for s in expand(exp).steps if s.kind == "eval"]
    tests = [s for s in steps if s.config["custom"].get("seen_file")]
    valids = [s for s in steps if s not in tests]
    assert tests and all("custom.seen_file" in s.fingerprint and "halu" not in s.config for s in tests)
    assert all(s.config["custom"]["template"] == custom["template"] and s.config["custom"]["instructions"] == "own"
               and "seen_file" not in s.config["custom"] for s in valids)
    # `original` leaves the token as plain text in the task's own options
    assert sorted(s.config["custom"].get("token_init", "random") for s in tests) == ["none", "random"]
    seen.write_text("route it <sep>\n")  # editing a phrasing file changes the test steps' keys
    assert {s.key for s in tests}.isdisjoint(s.key for s in expand(exp).steps)
    exp.grid.methods = ["mean_init"]
    with pytest.raises(ConfigError, match="special_token"):
        expand(exp)

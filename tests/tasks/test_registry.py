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

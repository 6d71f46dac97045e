"""Bad configs for every stage and for experiments: exit 2 with a clear message, no traceback, no output, and
no model loaded (the loaders are replaced by a bomb for these runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from delia.config import merge

from .clirun import run_cli
from .mixing.conftest import downstream_rows, write_jsonl

# (name, command, YAML text, phrase the message must hold)
TRAIN = [
    ("lr_nan", "learning_rate: .nan\n", "learning_rate: expected a finite number, got nan"),
    ("lr_inf", "learning_rate: .inf\n", "expected a finite number, got inf"),
    ("lr_negative", "learning_rate: -1.0e-3\n", "learning_rate must be >= 0"),
    ("weight_decay_negative", "weight_decay: -0.1\n", "warmup_steps and weight_decay must be >= 0"),
    ("lr_word", "learning_rate: fast\n", "learning_rate: expected float, got 'fast'"),
    ("warmup_negative", "warmup_steps: -5\n", "warmup_steps and weight_decay must be >= 0"),
    ("warmup_ratio_high", "warmup_ratio: 1.5\n", "warmup_ratio must be in [0, 1)"),
    ("trl_typo", "trl:\n  max_grad_nrom: 1.0\n", "trl.max_grad_nrom: not an SFTConfig option; did you mean max_grad_norm"),
    ("trl_bad_type", "trl:\n  max_grad_norm: steep\n", "trl.max_grad_norm: expected float, got 'steep'"),
    ("trl_clash", "trl:\n  learning_rate: 0.1\n", "are TrainConfig fields"),
    ("key_typo", "lerning_rate: 1e-3\n", "unknown config key 'lerning_rate'; did you mean learning_rate"),
    ("int_as_word", "lora_r: sixteen\n", "lora_r: expected int, got 'sixteen'"),
    ("int_as_bool", "lora_r: true\n", "lora_r: expected int, got True"),
    ("epochs_zero", "epochs: 0\n", "epochs must be > 0"),
    ("batch_not_multiple", "batch_size: 6\nmicro_batch_size: 4\n", "batch_size 6 is not a multiple"),
    ("precision", "precision: fp8\n", "precision: 'fp8' is not one of"),
    ("scheduler_typo", "lr_scheduler_type: cosine_with_restart\n", "did you mean cosine_with_restarts"),
    ("resume_word", "resume: sometimes\n", "resume: 'sometimes' is not one of"),
    ("yaml_syntax", "lora_r: [16\n", "invalid YAML"),
    ("top_level_list", "- lora_r: 16\n", "top level must be a mapping"),
    ("not_utf8", b"lora_r: 16 \xff\n", "not UTF-8 text"),
    ("dropout_one", "lora_dropout: 1.0\n", "lora_dropout must be in [0, 1)"),
]
EVAL = [
    ("eval_batch_zero", "generation:\n  batch_size: 0\n", "generation.batch_size and generation.max_new_tokens"),
    ("eval_instructions", "halu:\n  instructions: 'sen:1'\n", "unknown set 'sen'"),
    ("eval_task", "task: summarise\n", "unknown task 'summarise'"),
    ("eval_ci", "ci_level: 1.5\n", "ci_level in (0, 1)"),
    ("eval_dtype", "dtype: fp8\n", "dtype: 'fp8' is not one of"),
]
SAMPLE = [
    ("sample_temperature", "temperature: -1\n", "temperature >= 0"),
    ("sample_engine", "engine: openia\n", "openia"),
    ("sample_top_p", "top_p: 0\n", "0 < top_p <= 1"),
]
BUILD = [
    ("build_ratio", "ratio: -1\n", "ratio: must be a number >= 0"),
    ("build_template", "template: 'no placeholder'\n", "must contain {instruction} once"),
]
EXPERIMENT = [
    ("exp_sizes_past_data", "grid:\n  sizes: [5000]\n", "grid.sizes: size 5000"),
    ("exp_unknown_method", "grid:\n  methods: [delai]\n", "delai"),
    ("exp_train_lr", "train:\n  learning_rate: -1.0\n", "learning_rate must be >= 0"),
    ("exp_empty_sizes", "grid:\n  sizes: []\n", "grid.sizes: give at least one value"),
    ("exp_test_rows", "data:\n  test_rows: [2, 50]\n", "data.test_rows: [2, 50) reaches past the 6 rows"),
    ("exp_trl_typo", "train:\n  trl:\n    gradient_acumulation: 2\n", "trl.gradient_acumulation"),
]


@pytest.fixture
def files(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    train = write_jsonl(d / "train.jsonl", downstream_rows(10))
    test = write_jsonl(d / "test.jsonl", [{"context": f"c{i}", "label": "yes"} for i in range(6)])
    queries = write_jsonl(d / "q.jsonl", [{"instruction": f"say {i}", "output": f"{i}"} for i in range(20)])
    return {"train": train, "test": test, "queries": queries}


def _no_model(monkeypatch):
    def bomb(*a, **k):
        raise AssertionError("a model was loaded before the config was checked")
    for name in ("load", "load_model"):
        monkeypatch.setattr(f"delia.models.{name}", bomb)


def _args(kind: str, cfg: Path, out: Path, files: dict, tiny: str) -> list[str]:
    return {
        "train": ["train", "--config", str(cfg), "--data", str(files["train"]), "--out", str(out), "--model", tiny],
        "eval": ["eval", "--config", str(cfg), "--data", str(files["test"]), "--out", str(out), "--model", tiny],
        "sample": ["sample", "--config", str(cfg), "--queries", str(files["queries"]), "--out",
                   str(out / "c.jsonl"), "--model", tiny, "--no-progress"],
        "build": ["build", "--config", str(cfg), "--downstream", str(files["train"]), "--out", str(out),
                  "--model", ""],
        "experiment": ["experiment", str(cfg), "--dry-run"],
    }[kind]


def test_corpus_size():
    assert len(TRAIN + EVAL + SAMPLE + BUILD + EXPERIMENT) >= 20


@pytest.mark.parametrize("kind,cases", [("train", TRAIN), ("eval", EVAL), ("sample", SAMPLE), ("build", BUILD),
                                        ("experiment", EXPERIMENT)])
def test_bad_configs_exit_2_before_any_model(kind, cases, files, tiny_dir, tmp_path, monkeypatch):
    _no_model(monkeypatch)
    failures = []
    for name, text, phrase in cases:
        cfg = tmp_path / f"{name}.yaml"
        out = tmp_path / f"out-{name}"
        if kind == "experiment":
            base = {"name": name, "out": str(out), "data": {"train": str(files["train"]), "test": str(files["test"]),
                                                            "valid": None, "queries": str(files["queries"])},
                    "grid": {"methods": ["cit"], "sizes": [5], "ratios": [0.0], "seeds": [1]}}
            text = json.dumps(merge(base, _yaml(text)))
        cfg.write_bytes(text if isinstance(text, bytes) else text.encode())
        code, output = run_cli(_args(kind, cfg, out, files, tiny_dir))
        flat = " ".join(output.split())
        problems = [p for p, bad in [(f"exit {code}", code != 2), ("no phrase", " ".join(phrase.split()) not in flat),
                                     ("traceback", "Traceback" in output), ("output left", out.exists())] if bad]
        if problems:
            failures.append(f"{name}: {', '.join(problems)}: {output.strip()[:300]}")
    assert not failures, "\n".join(failures)


def _yaml(text: str):
    import yaml

    return yaml.safe_load(text)


def test_yaml_float_without_a_dot_is_accepted(files, tiny_dir, tmp_path):
    from delia.config import load_config
    from delia.training import TrainConfig

    cfg = tmp_path / "t.yaml"
    cfg.write_text("learning_rate: 1e-3\nweight_decay: 1E-2\ntrl:\n  max_grad_norm: 5e-1\n")
    c = load_config(TrainConfig, cfg)
    assert (c.learning_rate, c.weight_decay, c.trl) == (1e-3, 1e-2, {"max_grad_norm": 0.5})


def test_a_good_experiment_config_plans(files, tmp_path):
    """The experiment base config of the corpus is valid: the errors above come from the one bad key."""
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(json.dumps({"name": "ok", "out": str(tmp_path / "o"),
                               "data": {"train": str(files["train"]), "test": str(files["test"]), "valid": None,
                                        "queries": str(files["queries"])},
                               "grid": {"methods": ["cit"], "sizes": [5], "ratios": [0.0], "seeds": [1]}}))
    code, output = run_cli(["experiment", str(cfg), "--dry-run"])
    assert code == 0, output

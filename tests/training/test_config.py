"""TrainConfig: paper defaults, the batch rule, validation, YAML and key=value overrides, shipped configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from delia.config import ConfigError, load_config
from delia.training.config import TrainConfig
from delia.training.train import resolve_batch, resolve_bf16

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("train_*.yaml"))


def test_paper_recipe_defaults():
    c = TrainConfig()
    assert (c.lora_r, c.lora_alpha, c.lora_dropout) == (16, 16, 0.05)
    assert c.target_modules == ["q_proj", "k_proj", "v_proj", "o_proj"] and c.train_new_tokens
    assert (c.learning_rate, c.lr_scheduler_type, c.warmup_steps, c.weight_decay, c.epochs) == (
        2e-4, "constant_with_warmup", 25, 0.01, 1.0)
    assert c.special_tokens == ["<sep>"] and c.seed == 42


@pytest.mark.parametrize("rows,world,want", [(99, 1, (16, 2, 8)), (255, 1, (16, 2, 8)), (256, 1, (64, 2, 32)),
                                             (52000, 2, (64, 2, 16))])
def test_batch_rule(rows, world, want):
    assert resolve_batch(rows, TrainConfig(), world) == want


def test_batch_must_divide():
    with pytest.raises(ConfigError, match="not a multiple"):
        resolve_batch(100, TrainConfig(batch_size=10, micro_batch_size=4))


def test_precision_follows_hardware(monkeypatch):
    from delia import models

    assert resolve_bf16("fp32") is False and resolve_bf16("bf16") is True
    if torch.cuda.is_available():
        pytest.skip("auto follows the GPU here")
    assert resolve_bf16("auto") is models.cpu_supports_bf16()
    for native in (True, False):  # a CPU with native bf16 and one without, on any machine
        monkeypatch.setattr(models, "cpu_supports_bf16", lambda native=native: native)
        assert resolve_bf16("auto") is native


def test_overrides_and_validation(tmp_path):
    y = tmp_path / "t.yaml"
    y.write_text("lora_r: 8\ntrl:\n  max_grad_norm: 0.3\n")
    c = load_config(TrainConfig, y, ["lora_r=4", "trl.optim=adamw_torch_fused", "special_tokens=[<a>, <b>]"])
    assert c.lora_r == 4 and c.trl == {"max_grad_norm": 0.3, "optim": "adamw_torch_fused"}
    assert c.special_tokens == ["<a>", "<b>"]
    with pytest.raises(ConfigError, match="token_init"):
        load_config(TrainConfig, None, ["token_init=zeros"])
    with pytest.raises(ConfigError, match="token_description"):
        load_config(TrainConfig, None, ["token_init=mean"])
    with pytest.raises(ConfigError, match="TrainConfig fields"):
        load_config(TrainConfig, None, ["trl.learning_rate=1"])
    with pytest.raises(ConfigError, match="choose one way"):
        load_config(TrainConfig, None, ["target_modules=[q_proj, embed_tokens]"])


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_validate(path):
    load_config(TrainConfig, path)


def test_configs_exist():
    assert CONFIGS, "configs/train_*.yaml missing"


def test_token_side_validation_and_hashes(tmp_path):
    from delia.config import config_hash, to_dict
    from delia.training.train import RESUME_FREE, _resume_hash

    assert TrainConfig().token_side is None  # unset = both, today's behaviour
    y = tmp_path / "t.yaml"
    y.write_text("lora_r: 8\ntoken_side: inptu\n")
    with pytest.raises(ConfigError, match=r"t\.yaml.*token_side: 'inptu' is not one of input, both"):
        load_config(TrainConfig, y)
    with pytest.raises(ConfigError, match="needs train_new_tokens=true"):
        load_config(TrainConfig, None, ["token_side=input", "train_new_tokens=false"])
    assert load_config(TrainConfig, None, ["token_side=input"]).token_side == "input"
    # runs recorded before the field existed keep their resume/finished hash; setting it changes the hash
    cfg = TrainConfig(data="d.jsonl", out="o")
    before = config_hash({k: v for k, v in to_dict(cfg).items()
                          if k not in RESUME_FREE and k not in ("token_side", "validation")})
    assert _resume_hash(cfg) == before
    validated = TrainConfig(data="d.jsonl", out="o", validation={"eval": {"task": "json", "data": "v.jsonl"}})
    assert _resume_hash(validated) != before  # model selection is another run
    assert _resume_hash(TrainConfig(data="d.jsonl", out="o", token_side="input")) != before
    assert _resume_hash(TrainConfig(data="d.jsonl", out="o", token_side="both")) != before

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from delia.config import ConfigError, config_hash, describe, load_config, opt, parse_overrides


@dataclass
class Lora:
    r: int = opt(16, "LoRA rank")
    targets: list[str] = opt(["q_proj", "v_proj"], "modules")

    def __post_init__(self):
        if self.r <= 0:
            raise ValueError(f"lora.r must be positive, got {self.r}")


@dataclass
class Train:
    model: str = opt("smollm2-135m-instruct", "model name or path")
    lr: float = opt(2e-4, "learning rate")
    schedule: Literal["constant", "cosine"] = opt("constant", "lr schedule")
    seed: int | None = opt(None, "seed")
    lora: Lora = field(default_factory=Lora)
    extra: dict = opt({}, "passed through")


def test_yaml_then_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("lr: 1.0e-3\nlora:\n  r: 8\nextra: {a: 1}\n")
    cfg = load_config(Train, p, ["lora.r=4", "lora.targets=[q_proj]", "extra.b=2", "seed=7"])
    assert cfg.lr == 1e-3 and cfg.lora.r == 4 and cfg.lora.targets == ["q_proj"]
    assert cfg.extra == {"a": 1, "b": 2} and cfg.seed == 7
    # ints given for float fields are accepted as floats
    assert load_config(Train, None, ["lr=1"]).lr == 1.0


def test_defaults_are_not_shared():
    a, b = Train(), Train()
    a.lora.targets.append("x")
    assert b.lora.targets == ["q_proj", "v_proj"]


def test_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown config key 'lora.targts'; did you mean targets"):
        load_config(Train, None, ["lora.targts=[x]"])
    with pytest.raises(ConfigError, match="lora.r: expected int"):
        load_config(Train, None, ["lora.r=abc"])
    with pytest.raises(ConfigError, match="schedule: 'linear' is not one of"):
        load_config(Train, None, ["schedule=linear"])
    with pytest.raises(ConfigError, match="lora.r must be positive"):
        load_config(Train, None, ["lora.r=0"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: 1\nlora: [\n")
    with pytest.raises(ConfigError, match=r"bad.yaml:\d+: invalid YAML"):
        load_config(Train, bad)
    with pytest.raises(ConfigError, match="must look like key.sub=value"):
        parse_overrides(["lr"])


def test_hash_changes_with_content_only():
    assert config_hash(Train()) == config_hash(Train())
    assert config_hash(Train()) != config_hash(Train(lr=1e-3))


def test_describe_lists_nested_help():
    rows = {k: h for k, _, h in describe(Train)}
    assert rows["lora.r"] == "LoRA rank" and rows["lr"] == "learning rate"


@dataclass
class Numbers:
    alpha: int | float = opt(5.0, "a number kept as written")


def test_a_union_takes_the_first_member_that_accepts_the_value():
    from delia.config import from_dict

    assert type(from_dict(Numbers, {"alpha": 5}).alpha) is int  # `5` stays 5, so hashes of it stay
    assert from_dict(Numbers, {"alpha": 0.5}).alpha == 0.5
    with pytest.raises(ConfigError, match=r"n\.alpha: expected int or float, got 'x'"):
        from_dict(Numbers, {"alpha": "x"}, where="n")
    with pytest.raises(ConfigError, match="n: expected a mapping, got 3"):
        from_dict(Numbers, 3, where="n")

"""DMT's second stage continues the first stage's adapter (the `init_adapter` hook of `delia train`)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from delia.training import RunError, TrainConfig, run_train


def _data(tmp_path, shared_data, n=4):
    d = tmp_path / "data"
    d.mkdir()
    lines = (shared_data / "halu/train.jsonl").read_text().splitlines()[:n]
    (d / "train.jsonl").write_text("\n".join(lines) + "\n")
    return str(d / "train.jsonl")


def _adapter(run):
    return load_file(str(run / "adapter_model.safetensors"))


def test_a_second_stage_starts_from_the_first_stages_adapter(tmp_path, tiny_dir, shared_data):
    data = _data(tmp_path, shared_data)
    common = {"data": data, "model": tiny_dir, "max_steps": 1, "batch_size": 4, "report_to": ["none"],
              "warmup_steps": 0, "threads": 1}
    s1 = tmp_path / "stage1"
    run_train(TrainConfig(out=str(s1), learning_rate=1e-3, **common))
    # learning rate 0: a continued stage must end exactly where stage 1 ended
    s2 = tmp_path / "stage2"
    run_train(TrainConfig(out=str(s2), learning_rate=0.0, init_adapter=str(s1), **common))
    a1, a2 = _adapter(s1), _adapter(s2)
    assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)
    fresh = tmp_path / "fresh"
    run_train(TrainConfig(out=str(fresh), learning_rate=0.0, **common))
    a3 = _adapter(fresh)
    assert any(not torch.equal(a1[k], a3[k]) for k in a1)  # without the hook: a new random LoRA
    assert json.loads((s2 / "delia_run.json").read_text())["config"]["init_adapter"] == str(s1)


def test_a_run_from_another_base_is_refused(tmp_path, tiny_dir, tiny_untied_dir, shared_data):
    data = _data(tmp_path, shared_data)
    common = {"data": data, "max_steps": 1, "batch_size": 4, "report_to": ["none"], "threads": 1}
    s1 = tmp_path / "stage1"
    run_train(TrainConfig(out=str(s1), model=tiny_dir, **common))
    with pytest.raises(RunError, match="same base"):
        run_train(TrainConfig(out=str(tmp_path / "s2"), model=tiny_untied_dir, init_adapter=str(s1), **common))


def test_a_second_stage_continues_an_input_side_run(tmp_path, tiny_dir, shared_data):
    """token_side input on a tied model: stage 2 unties the head as stage 1 did and continues its input rows;
    asking for the other side is refused."""
    data = _data(tmp_path, shared_data)
    common = {"data": data, "model": tiny_dir, "max_steps": 1, "batch_size": 4, "report_to": ["none"],
              "warmup_steps": 0, "threads": 1, "precision": "fp32"}
    s1 = tmp_path / "stage1"
    run_train(TrainConfig(out=str(s1), learning_rate=1e-2, token_side="input", **common))
    s2 = tmp_path / "stage2"
    run_train(TrainConfig(out=str(s2), learning_rate=0.0, init_adapter=str(s1), token_side="input", **common))
    a1, a2 = _adapter(s1), _adapter(s2)
    assert a1.keys() == a2.keys() and all(torch.equal(a1[k], a2[k]) for k in a1)
    assert json.loads((s2 / "delia_run.json").read_text())["untied_head"] is True
    from delia.training import load_trained

    (m1, tok), (m2, _) = load_trained(s1), load_trained(s2)
    ids = torch.tensor([tok("Answer in <sep>.")["input_ids"]])
    with torch.no_grad():
        assert torch.equal(m1(input_ids=ids).logits, m2(input_ids=ids).logits)
    with pytest.raises(RunError, match="token_side=input, this run asks both"):
        run_train(TrainConfig(out=str(tmp_path / "s3"), init_adapter=str(s1), **common))

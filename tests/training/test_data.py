"""Tokenized rows: the loss mask covers exactly the reply, truncation is counted, bad rows name file:line."""

from __future__ import annotations

import json

import pytest
import torch

from delia.data import DataError, Record
from delia.models import load_tokenizer
from delia.training.config import TrainConfig
from delia.training.data import (encode_record, manifest_special_tokens, padding_fraction, prepare_rows,
                                 read_training_records)
from delia.training.train import lora_config, sft_config

from .conftest import tiny_cfg, write_rows


def rec(user: str, reply: str) -> Record:
    return Record(id="x", messages=[{"role": "user", "content": user}, {"role": "assistant", "content": reply}])


def test_mask_is_exactly_the_reply(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    ids, mask = encode_record(rec("Say hi in <sep>.", "{'hi': 1}"), tok)
    n_prompt = mask.index(1)
    assert mask == [0] * n_prompt + [1] * (len(ids) - n_prompt)
    # the prompt is what the model sees at inference; the loss covers the reply and its end-of-turn token
    assert tok.decode(ids[:n_prompt]).endswith("<|im_start|>assistant\n")
    assert tok.decode(ids[n_prompt:]) == "{'hi': 1}<|im_end|>\n"


def make_trainer(model_dir: str, tmp_path):
    """The SFTTrainer run_train builds, on 6 tiny rows; also returns {input_ids: completion_mask}."""
    from datasets import Dataset
    from trl import SFTTrainer

    from delia.models import add_special_tokens, load_model
    from delia.training.compat import patch_fused_head

    data = write_rows(tmp_path / "d.jsonl", n=6)
    cfg = tiny_cfg(data, tmp_path / "run", model_dir)
    tok, model = load_tokenizer(model_dir), load_model(model_dir, dtype="fp32")
    info = add_special_tokens(model, tok, ["<sep>"])
    prepared = prepare_rows(read_training_records(data), tok, cfg.max_length)
    masks = {tuple(r["input_ids"]): r["completion_mask"] for r in prepared.rows}
    ds = Dataset.from_list([{"input_ids": r["input_ids"], "labels": [t if m else -100 for t, m in
                                                                   zip(r["input_ids"], r["completion_mask"])]}
                            for r in prepared.rows])
    trainer = SFTTrainer(model=model, args=sft_config(cfg, tmp_path / "run", 2, 2, False, 1), train_dataset=ds,
                         processing_class=tok, peft_config=lora_config(cfg, model, info.ids))
    patch_fused_head(trainer.model)
    return trainer, masks


def test_trainer_batches_carry_no_prompt_loss(tiny_dir, tmp_path):
    """Through TRL's preparation and collator: labels are -100 on every prompt and pad position, ids elsewhere."""
    trainer, masks = make_trainer(tiny_dir, tmp_path)
    seen = 0
    for batch in trainer.get_train_dataloader():
        for ids, labels, att in zip(batch["input_ids"], batch["labels"], batch["attention_mask"]):
            n = int(att.sum())
            mask = torch.tensor(masks[tuple(ids[:n].tolist())])
            assert torch.equal(labels[:n][mask == 0], torch.full_like(labels[:n][mask == 0], -100))
            assert torch.equal(labels[:n][mask == 1], ids[:n][mask == 1])
            assert (labels[n:] == -100).all()
            seen += 1
    assert seen == 6  # every row once per epoch, none dropped


def test_truncation_is_counted_not_silent(tiny_dir):
    tok = load_tokenizer(tiny_dir)
    long_prompt = rec("word " * 200, "ok")
    long_reply = rec("hi", "word " * 200)
    out = prepare_rows([long_prompt, long_reply, rec("hi", "ok")], tok, max_length=64)
    assert out.excluded == ["x"] and len(out.truncated) == 2 and len(out.rows) == 2
    assert all(len(r["input_ids"]) <= 64 for r in out.rows)


def test_rows_without_reply_name_file_and_line(tmp_path):
    p = tmp_path / "d.jsonl"
    p.write_text(json.dumps({"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]})
                 + "\n" + json.dumps({"messages": [{"role": "user", "content": "q"}]}) + "\n")
    with pytest.raises(DataError, match=r"d\.jsonl:2: messages: the last turn must be"):
        read_training_records(p)


def test_manifest_tokens(tmp_path):
    data = write_rows(tmp_path / "train.jsonl")
    assert manifest_special_tokens(data) == []
    (tmp_path / "manifest.json").write_text(json.dumps({"special_tokens": ["<sep>", "<fmt>"]}))
    assert manifest_special_tokens(data) == ["<sep>", "<fmt>"]
    (tmp_path / "manifest.json").write_text(json.dumps({"special_tokens": "<sep>"}))
    with pytest.raises(DataError, match="manifest.json:1: special_tokens"):
        manifest_special_tokens(data)


def test_padding_fraction_by_hand():
    # batches [10, 4] -> 20 slots, 14 real; [6] -> 6 slots, 6 real: 1 - 20/26
    assert padding_fraction([10, 4, 6], [[0, 1], [2]]) == pytest.approx(1 - 20 / 26)


def test_paper_defaults_reach_trl(tmp_path):
    cfg = TrainConfig(data="d.jsonl", out=str(tmp_path), trl={"max_grad_norm": 0.5})
    args = sft_config(cfg, tmp_path, micro=4, accum=4, bf16=False, world_size=1)
    assert (args.learning_rate, args.lr_scheduler_type.value, args.warmup_steps, args.weight_decay) == (
        2e-4, "constant_with_warmup", 25, 0.01)
    assert args.num_train_epochs == 1 and args.gradient_checkpointing is False and args.bf16 is False
    assert args.logging_steps == 1 and args.max_grad_norm == 0.5 and args.completion_only_loss is True
    assert args.per_device_train_batch_size * args.gradient_accumulation_steps == 16
    ratio = sft_config(TrainConfig(data="d", out="o", warmup_ratio=0.1), tmp_path, 4, 4, False, 1)
    assert ratio.warmup_steps == 0.1


def test_compact_head_gives_the_same_loss_and_gradients(tiny_untied_dir, tmp_path, monkeypatch):
    """Scoring only the reply positions on CPU changes nothing but the work done."""
    import trl.trainer.utils as trl_utils

    from delia.training.compat import compact_fused_head

    scored = []
    kernel = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored.append(hidden.shape[0])
            return kernel.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    trainer, _ = make_trainer(tiny_untied_dir, tmp_path)
    batch = next(iter(trainer.get_train_dataloader()))
    model = trainer.model.train()
    results = []
    for compact in (False, True):
        model.zero_grad()
        with compact_fused_head(compact):
            loss = trainer.compute_loss(model, dict(batch))
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((loss.detach(), grads))
    (l0, g0), (l1, g1) = results
    labels = batch["labels"][:, 1:]
    assert scored == [labels.numel(), int((labels != -100).sum())]  # all positions, then only the reply's
    torch.testing.assert_close(l1, l0, rtol=1e-5, atol=1e-6)
    assert g0.keys() == g1.keys() and any("trainable_tokens" in k for k in g0)
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-4, atol=1e-6, msg=k)
    assert not trl_utils._use_triton(torch.device("cpu"))  # restored after the block

"""Training on tiny tied and untied models: what moves, what stays, loss, reload, merge, resume."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from delia.models import add_special_tokens, is_tied, load_model, load_tokenizer
from delia.training import load_trained, read_run_meta, run_train
from delia.training.artifacts import RunError

from .conftest import Interrupt, tiny_cfg


def fresh_base(base: str):
    """The base model with `<sep>` added exactly as training did (same seed and init)."""
    torch.manual_seed(42)
    model, tok = load_model(base, dtype="fp32"), load_tokenizer(base)
    info = add_special_tokens(model, tok, ["<sep>"], init="mean_vocab")
    return model, tok, info


def sample_ids(tok) -> torch.Tensor:
    ids = tok.apply_chat_template([{"role": "user", "content": "What is 2 plus 5? Answer in <sep>."}],
                                  add_generation_prompt=True, tokenize=True)["input_ids"]
    return torch.tensor([ids])


def test_base_weights_bit_identical(run):
    result, model, base = run
    ref, _, _ = fresh_base(base)
    ref_params = dict(ref.named_parameters())
    checked = set()
    for name, p in model.get_base_model().named_parameters():
        if "lora_" in name or "trainable_tokens" in name:
            continue
        key = name.replace(".base_layer", "").replace(".token_adapter", "").replace(".original_module", "")
        assert torch.equal(p, ref_params[key]), f"base weight {name} changed"
        assert not p.requires_grad, f"base weight {name} is trainable"
        checked.add(key)
    # every base tensor was compared (embeddings, all rows of the pre-existing vocabulary included)
    assert checked == set(ref_params)


def test_adapter_and_token_rows_changed(run):
    result, model, base = run
    ref, tok, info = fresh_base(base)
    sep = info.ids[0]
    assert read_run_meta(result.run_dir)["tied"] is is_tied(ref)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    emb = model.get_input_embeddings()
    new_in = emb.weight[sep]  # the wrapper serves the merged matrix
    assert not torch.allclose(new_in, ref.get_input_embeddings().weight[sep])
    out = model.get_base_model().get_output_embeddings().weight[sep]
    if is_tied(ref):
        assert torch.equal(out, new_in)  # one row, shared by both sides
    else:
        assert not torch.allclose(out, ref.get_output_embeddings().weight[sep])
        assert not torch.equal(out, new_in)
    # any other row of the effective matrices is the base row
    assert torch.equal(emb.weight[:sep], ref.get_input_embeddings().weight[:sep])


def test_loss_falls_and_log_written(run):
    result, _, _ = run
    log = json.loads((result.run_dir / "train_log.json").read_text())
    losses = [e["loss"] for e in log if "loss" in e]
    # a random tiny model starts near ln(vocab) ~ 10.8; LoRA + the token row must pull it down every step
    assert len(losses) == 4 and all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0] - 0.2
    assert all(e["tokens_per_s"] > 0 for e in log[1:] if "loss" in e)
    meta = read_run_meta(result.run_dir)
    assert meta["special_tokens"]["tokens"] == ["<sep>"] and meta["global_step"] == 4
    assert meta["config"]["lora_r"] == 16 and meta["batch"] == {
        "effective": 4, "micro": 2, "accum": 2, "processes": 1, "batching": "rebalance",
        "expected_padding_fraction": meta["batch"]["expected_padding_fraction"]}
    adapter = load_file(str(result.run_dir / "adapter_model.safetensors"))
    # the adapter holds LoRA and the trained token rows only, never full embedding matrices
    assert max(t.numel() for t in adapter.values()) < 50_000
    assert any("trainable_tokens_delta" in k for k in adapter)


def test_reload_gives_identical_logits(run):
    result, model, base = run
    ids = sample_ids(load_tokenizer(base))
    model.eval()
    with torch.no_grad():
        want = model(input_ids=ids).logits
    loaded, tok = load_trained(result.run_dir)
    assert tok.convert_tokens_to_ids("<sep>") == read_run_meta(result.run_dir)["special_tokens"]["ids"][0]
    with torch.no_grad():
        got = loaded(input_ids=ids).logits
    assert torch.equal(got, want)


def test_plain_transformers_peft_reload(run):
    """What a user without delia does: resize the base to the run's rows, then PeftModel.from_pretrained."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result, model, base = run
    tok = AutoTokenizer.from_pretrained(result.run_dir)
    plain = AutoModelForCausalLM.from_pretrained(base)
    plain.resize_token_embeddings(read_run_meta(result.run_dir)["special_tokens"]["new_rows"])
    plain = PeftModel.from_pretrained(plain, str(result.run_dir)).eval()
    ids = sample_ids(tok)
    model.eval()
    with torch.no_grad():
        assert torch.equal(plain(input_ids=ids).logits, model(input_ids=ids).logits)


def test_wrong_base_is_refused(run, tiny_dir, tiny_untied_dir):
    result, _, base = run
    other = tiny_untied_dir if base == tiny_dir else tiny_dir
    with pytest.raises(RunError, match="pass the right base"):
        load_trained(result.run_dir, base=other)


def test_finished_run_is_skipped(tied_run, tiny_dir, rows_file):
    result, _ = tied_run
    again = run_train(tiny_cfg(rows_file, result.run_dir, tiny_dir))
    assert again.skipped and again.global_step == 4
    for change in ({"lora_r": 8}, {"max_steps": 6}):
        with pytest.raises(RunError, match="another config"):
            run_train(tiny_cfg(rows_file, result.run_dir, tiny_dir, **change))


def test_resume_continues_from_checkpoint(tied_run, tiny_dir, rows_file, tmp_path):
    """Interrupted after step 3 (checkpoint at 2), resumed: same final adapter as the uninterrupted run."""
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_train(tiny_cfg(rows_file, out, tiny_dir), callbacks=[Interrupt(at=3)])
    assert not (out / "delia_run.json").exists() and (out / "checkpoints" / "checkpoint-2").is_dir()
    with pytest.raises(RunError, match="interrupted"):
        load_trained(out)
    result = run_train(tiny_cfg(rows_file, out, tiny_dir))
    assert result.resumed_from.endswith("checkpoint-2") and result.global_step == 4
    steps = [e["step"] for e in json.loads((out / "train_log.json").read_text()) if "loss" in e]
    assert steps == [1, 2, 3, 4]
    got = load_file(str(out / "adapter_model.safetensors"))
    want = load_file(str(tied_run[0].run_dir / "adapter_model.safetensors"))
    assert got.keys() == want.keys()
    for k in want:  # equal only if the optimizer state, schedule, data order and RNG were restored
        torch.testing.assert_close(got[k], want[k], rtol=0, atol=1e-6, msg=k)


def test_merge_writes_a_plain_model(tiny_dir, rows_file, tmp_path):
    """--merge on a tied model: a plain transformers model whose logits match the adapter's."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    result = run_train(tiny_cfg(rows_file, tmp_path / "run", tiny_dir, max_steps=1, merge=True))
    merged_dir = result.run_dir / "merged"
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    tok = AutoTokenizer.from_pretrained(merged_dir)
    assert is_tied(merged) and "<sep>" in tok.get_vocab()
    adapter, _ = load_trained(result.run_dir)
    ids = sample_ids(tok)
    with torch.no_grad():
        torch.testing.assert_close(merged(input_ids=ids).logits, adapter(input_ids=ids).logits, rtol=0, atol=1e-4)

"""delia.training.compat: each shim's reliance on TRL / PEFT / transformers internals, checked so that an
upgrade which moves them fails here, by name, instead of silently changing what trains."""

from __future__ import annotations

import pytest
import torch

from delia.models import add_special_tokens, is_tied, load_model, load_tokenizer
from delia.training.compat import (compact_fused_head, patch_fused_head, run_callback_first,
                                   save_without_embedding_layers, tensorboard_callback, untie_output_embeddings)


def tiny_with_sep(model_dir: str):
    model, tok = load_model(model_dir, dtype="fp32"), load_tokenizer(model_dir)
    info = add_special_tokens(model, tok, ["<sep>"])
    return model, info.ids[0]


def peft_tokens(model, layers: dict[str, list[int]]):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj"], task_type="CAUSAL_LM",
                                            trainable_token_indices=layers))


def test_trl_device_check_exists_and_is_switched_for_the_block():
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    assert callable(original), "TRL moved trl.trainer.utils._use_triton: compact_fused_head would do nothing"
    cpu = torch.device("cpu")
    assert not original(cpu), "TRL now compacts on CPU itself: compact_fused_head may be dropped"
    with compact_fused_head(True):
        assert trl_utils._use_triton(cpu)
    assert trl_utils._use_triton is original


def test_peft_head_wrapper_gets_the_bias_trl_reads(tiny_dir):
    import inspect

    import trl.trainer.utils as trl_utils
    from peft.utils.other import TrainableTokensWrapper

    assert "lm_head.bias" in inspect.getsource(trl_utils), "TRL's fused head no longer reads lm_head.bias"
    model, sep = tiny_with_sep(tiny_dir)
    peft_model = peft_tokens(model, {"model.embed_tokens": [sep], "lm_head": [sep]})
    head = peft_model.get_output_embeddings()
    assert isinstance(head, TrainableTokensWrapper), "PEFT no longer wraps the head in TrainableTokensWrapper"
    assert hasattr(head, "original_module"), "PEFT's TrainableTokensWrapper lost original_module"
    patch_fused_head(peft_model)
    assert "bias" in vars(head) and head.bias is head.original_module.bias


def test_peft_ties_a_tied_head_to_the_input_rows_unless_untied(tiny_dir):
    """Why token_side=input unties: PEFT wraps a tied model's head with the embedding's token adapter even
    when only the input embedding is named; after untie_output_embeddings it leaves the head alone."""
    from peft.utils.other import TrainableTokensWrapper

    model, sep = tiny_with_sep(tiny_dir)
    tied = peft_tokens(model, {"model.embed_tokens": [sep]})
    assert isinstance(tied.get_output_embeddings(), TrainableTokensWrapper), (
        "PEFT no longer ties a tied head to the input token adapter: untie_output_embeddings may be unneeded")

    model, sep = tiny_with_sep(tiny_dir)
    initial = model.get_input_embeddings().weight.detach().clone()
    untie_output_embeddings(model)
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    assert not is_tied(model) and torch.equal(head.weight, initial) and not head.weight.requires_grad
    assert model.config.tie_word_embeddings is False and model.all_tied_weights_keys == {}
    model.tie_weights()  # transformers must not re-tie from its config or its cached pairs
    model.tie_weights(recompute_mapping=False)
    assert head.weight is not emb.weight
    untied = peft_tokens(model, {"model.embed_tokens": [sep]})
    assert type(untied.get_output_embeddings()) is torch.nn.Linear
    assert [n for n, p in untied.named_parameters() if p.requires_grad and "lora_" not in n] == [
        "base_model.model.model.embed_tokens.token_adapter.trainable_tokens_delta.default"]


def test_an_untied_model_saves_and_loads_both_matrices(tiny_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, sep = tiny_with_sep(tiny_dir)
    untie_output_embeddings(model)
    with torch.no_grad():
        model.get_input_embeddings().weight[sep] += 1.0  # what merging the trained input row does
    model.save_pretrained(tmp_path / "m")
    back = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert not is_tied(back)
    assert torch.equal(back.get_input_embeddings().weight, model.get_input_embeddings().weight)
    assert torch.equal(back.get_output_embeddings().weight, model.get_output_embeddings().weight)


def test_untie_refuses_an_untied_model(tiny_untied_dir):
    model, _ = tiny_with_sep(tiny_untied_dir)
    with pytest.raises(ValueError, match="not tied"):
        untie_output_embeddings(model)


def test_trainer_saves_adapters_without_embedding_copies(tiny_dir, tmp_path):
    import inspect

    from peft import PeftModel
    from safetensors import safe_open
    from transformers import Trainer

    assert "save_embedding_layers" in inspect.signature(PeftModel.save_pretrained).parameters, (
        "PEFT's save_pretrained lost save_embedding_layers: save_without_embedding_layers would fail")
    assert ".save_pretrained(" in inspect.getsource(Trainer._save), (
        "the Trainer no longer saves through model.save_pretrained: save_without_embedding_layers does nothing")

    def saved(shim: bool) -> set[str]:
        model, sep = tiny_with_sep(tiny_dir)  # the vocabulary was resized: PEFT's 'auto' saves the embeddings
        peft_model = peft_tokens(model, {"model.embed_tokens": [sep]})
        if shim:
            save_without_embedding_layers(peft_model)
        out = tmp_path / f"shim{shim}"
        peft_model.save_pretrained(str(out))  # as the Trainer calls it: no save_embedding_layers
        with safe_open(out / "adapter_model.safetensors", "pt") as f:
            return set(f.keys())

    def matrices(keys: set[str]) -> set[str]:  # full vocab x hidden copies (PEFT 0.21: token_adapter.base_layer)
        return {k for k in keys if k.endswith(("base_layer.weight", "embed_tokens.weight", "lm_head.weight"))}

    assert matrices(saved(False)), "PEFT no longer saves resized embeddings by default: the shim may be unneeded"
    kept = saved(True)
    assert not matrices(kept)
    assert any("trainable_tokens_delta" in k for k in kept)  # the trained rows are still saved


def test_a_callback_put_first_runs_before_the_loggers():
    from types import SimpleNamespace

    from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments
    from transformers.trainer_callback import CallbackHandler

    seen = []

    class Logger(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            seen.append(dict(logs))

    class AddsSpeed(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            logs["tokens_per_second"] = 1.0

    handler = CallbackHandler([Logger()], None, None, None, None)
    assert isinstance(handler.callbacks, list), "transformers' CallbackHandler.callbacks is no longer a list"
    run_callback_first(SimpleNamespace(callback_handler=handler), AddsSpeed())
    handler.on_log(TrainingArguments(output_dir="unused", report_to=[]), TrainerState(), TrainerControl(), {"loss": 1})
    assert seen == [{"loss": 1, "tokens_per_second": 1.0}], "CallbackHandler no longer calls callbacks in list order"


def test_tensorboard_logs_to_the_directory_given_not_the_environment(tmp_path, monkeypatch):
    import dataclasses

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from transformers.integrations import TensorBoardCallback

    assert "logging_dir" not in {f.name for f in dataclasses.fields(TrainingArguments)}, (
        "TrainingArguments has logging_dir again: pass each run's TensorBoard directory there instead")
    monkeypatch.setenv("TENSORBOARD_LOGGING_DIR", str(tmp_path / "env"))  # what the old code set once per process
    callback = tensorboard_callback(tmp_path / "run" / "tensorboard")
    assert isinstance(callback, TensorBoardCallback)
    args, state = TrainingArguments(output_dir=str(tmp_path / "out"), report_to=[]), TrainerState()
    state.global_step = 3
    for event, kw in (("on_train_begin", {}), ("on_log", {"logs": {"loss": 0.5}}), ("on_train_end", {})):
        getattr(callback, event)(args, state, TrainerControl(), **kw)
    acc = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("train/loss")] == [(3, 0.5)]
    assert not (tmp_path / "env").exists() and not (tmp_path / "out").exists()


def test_a_checkpoints_precision_is_read_from_the_training_args_the_trainer_saved(tmp_path):
    # transformers' Trainer pickles its TrainingArguments as training_args.bin in every checkpoint
    from transformers import TrainingArguments

    from delia.training.compat import checkpoint_bf16

    for flag in (True, False):
        d = tmp_path / f"checkpoint-{int(flag)}"
        d.mkdir()
        torch.save(TrainingArguments(output_dir=str(tmp_path), bf16=flag, use_cpu=True), d / "training_args.bin")
        assert checkpoint_bf16(d) is flag
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "training_args.bin").write_bytes(b"not a pickle")
    assert checkpoint_bf16(tmp_path / "broken") is None and checkpoint_bf16(tmp_path / "missing") is None

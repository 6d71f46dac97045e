"""Every place delia relies on TRL, PEFT or transformers internals, one shim per function.

Each shim is covered by tests/training/test_compat.py, which fails loudly (naming the library and what moved)
when an upgrade changes the behaviour the shim depends on.

- `patch_fused_head`: TRL 1.16's fused LM head reads `lm_head.bias`, which PEFT's token wrapper lacks.
- `compact_fused_head`: TRL 1.16's device check (`trl.trainer.utils._use_triton`), switched for CPU.
- `untie_output_embeddings`: gives a tied model's LM head its own copy of the embedding so that PEFT, which
  decides from `config.tie_word_embeddings` whether to tie a head to the embedding's token adapter, trains the
  input rows alone; transformers 5 caches the tied pairs in `all_tied_weights_keys`.
- `save_without_embedding_layers`: the Trainer saves the adapter through `model.save_pretrained(dir, ...)`
  without PEFT's `save_embedding_layers`, whose `auto` writes full embedding copies once the vocab was resized.
- `run_callback_first`: the Trainer's callback list (`callback_handler.callbacks`) is called in order, and
  `add_callback` appends after the loggers; a callback that adds to the logs must come first.
- `checkpoint_bf16`: whether a Trainer checkpoint trained under bf16 mixed precision, from the pickled
  `TrainingArguments` the Trainer saves beside it (`training_args.bin`, its `bf16` field).
- `tensorboard_callback`: transformers 5 dropped `TrainingArguments.logging_dir`; its TensorBoard callback
  takes the directory from the process-wide `TENSORBOARD_LOGGING_DIR` (shared by every run in one process),
  so each run gets its own callback with its own writer instead.
"""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path
from typing import Any

import torch


def patch_fused_head(peft_model) -> None:
    """Let TRL's fused LM head read `.bias` on PEFT's token wrapper around the output embedding.

    TRL 1.16 computes the loss from `lm_head.weight` and `lm_head.bias` directly. PEFT's
    `TrainableTokensWrapper` serves `.weight` as the merged matrix (base rows + trained rows, so gradients
    reach the new rows) but has no `.bias`, which crashes at step 1. Exposing the base layer's bias on the
    wrapper instance is all that is missing.
    """
    from peft.utils.other import TrainableTokensWrapper

    head = peft_model.get_output_embeddings()
    if isinstance(head, TrainableTokensWrapper) and "bias" not in vars(head):
        object.__setattr__(head, "bias", getattr(head.original_module, "bias", None))


@contextlib.contextmanager
def compact_fused_head(enabled: bool = True):
    """Within the block, TRL's fused LM head scores only the positions that carry loss, on CPU too.

    TRL 1.16 compacts to the loss positions only on Triton devices (CUDA/XPU) and scores every position
    elsewhere, to keep tile shapes static for graph compilers (Neuron). CPU eager mode has nothing to
    recompile, and with prompts ~70% of the tokens most of the head's matmuls and 49k-column softmaxes would
    be wasted. The switch is TRL's own module-level device check, swapped for the block and restored after.
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if not enabled or original is None:
        yield
        return
    trl_utils._use_triton = lambda device: device.type == "cpu" or original(device)
    try:
        yield
    finally:
        trl_utils._use_triton = original


def untie_output_embeddings(model) -> None:
    """Give a tied model's LM head its own frozen copy of the (resized, initialised) embedding matrix.

    Every row stays bit-identical; afterwards the model is an ordinary untied model (config, tensors and
    transformers' tied-pair cache agree), so PEFT's `trainable_token_indices` on the input embedding alone no
    longer wraps the head with a tied adapter, merging writes the trained rows into the input matrix only, and
    a merged model saves both matrices. Costs one vocab x hidden matrix of memory.
    """
    head, emb = model.get_output_embeddings(), model.get_input_embeddings()
    if head is None or head.weight is not emb.weight:
        raise ValueError("untie_output_embeddings: the model's input and output embeddings are not tied")
    head.weight = torch.nn.Parameter(emb.weight.detach().clone(), requires_grad=False)
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.tie_word_embeddings = False
    # transformers 5 re-ties from this cache (tie_weights(recompute_mapping=False), e.g. in init_weights)
    if hasattr(model, "all_tied_weights_keys"):
        model.all_tied_weights_keys = model.get_expanded_tied_weights_keys(all_submodels=True)


def save_without_embedding_layers(peft_model) -> None:
    """Make every later `peft_model.save_pretrained(...)` (the Trainer's checkpoints and final save) leave out the
    full embedding matrices: the trained token rows are in the adapter, the rest is rebuilt from the base.

    PEFT's default `save_embedding_layers="auto"` saves the whole input and output embedding once the vocabulary
    was resized (~113 MB each for SmolLM2), and the Trainer calls `save_pretrained` without that option.
    """
    peft_model.save_pretrained = functools.partial(type(peft_model).save_pretrained, peft_model,
                                                   save_embedding_layers=False)


def run_callback_first(trainer, callback) -> None:
    """Put `callback` before every other callback of `trainer`, loggers included (`add_callback` appends), so
    what it adds to the logs (tokens/s) reaches them."""
    trainer.callback_handler.callbacks.insert(0, callback)


def tensorboard_callback(log_dir: str | Path) -> Any:
    """transformers' TensorBoard logger writing to `log_dir`: pass it in `callbacks` and leave "tensorboard" out of
    `report_to` (else the Trainer adds its own, which logs to the process's TENSORBOARD_LOGGING_DIR or under
    `output_dir/runs`)."""
    from torch.utils.tensorboard import SummaryWriter
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=SummaryWriter(log_dir=str(log_dir)))


def checkpoint_bf16(checkpoint: str | Path) -> bool | None:
    """The `bf16` flag of the TrainingArguments a Trainer checkpoint was written with (its `training_args.bin`),
    or None when the file is missing or unreadable. A checkpoint is our own output, so unpickling it is safe."""
    path = Path(checkpoint) / "training_args.bin"
    try:
        args = torch.load(path, weights_only=False)
    except Exception:  # noqa: BLE001  (missing, truncated, or written by another library version)
        return None
    flag = getattr(args, "bf16", None)
    return flag if isinstance(flag, bool) else None

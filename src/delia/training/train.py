"""`run_train`: LoRA SFT of a chat model on a messages JSONL through TRL's `SFTTrainer` and PEFT.

Reads top to bottom: resolve the run directory -> read and tokenize the data -> load the base and add the
special tokens -> build LoraConfig + SFTConfig -> train (resuming from the last checkpoint) -> save artifacts.

The new tokens' rows are trained with PEFT's `trainable_token_indices` on both the input and the output
embedding (PEFT ties the two wrappers on tied models), or with `token_side: input` on the input embedding
only (a tied model's head first gets its own frozen copy); see docs/training.md for why this and not LoRA or
`modules_to_save` on `embed_tokens`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from delia.config import ConfigError, config_hash, to_dict
from delia.precision import SHORT, Precision, write_recorded
from delia.training.artifacts import (LOG_FILE, ROWS_FILE, RUN_FILE, RunError, continue_from, read_log, save_new_rows,
                                      write_failure, write_json)
from delia.training.compat import (checkpoint_bf16, compact_fused_head, patch_fused_head, run_callback_first,
                                   save_without_embedding_layers, tensorboard_callback, untie_output_embeddings)
from delia.training.config import TrainConfig, effective_batch
from delia.training.data import manifest_special_tokens, padding_fraction, prepare_rows, read_training_records

log = logging.getLogger(__name__)

# Fields that may change between an interrupted run and its resumption without changing what is trained.
RESUME_FREE = ("out", "resume", "merge", "report_to", "max_steps", "logging_steps", "save_steps",
               "save_total_limit", "threads", "compact_head")
# Fields added after runs were recorded: unset, they leave the resume/finished hashes, so those runs still
# resume and are still recognised as finished.
LATE_OPTIONAL = ("token_side", "validation")


@dataclass
class TrainResult:
    """What `run_train` did."""

    run_dir: Path
    global_step: int
    train_loss: float | None
    resumed_from: str | None
    skipped: bool = False


def resolve_batch(n_rows: int, cfg: TrainConfig, world_size: int = 1) -> tuple[int, int, int]:
    """(effective batch, micro-batch per process, gradient accumulation steps).

    The paper's rule: 64 rows per optimizer step, 16 when the data has fewer than 256 rows.
    """
    effective = effective_batch(n_rows, cfg.batch_size)
    micro = max(1, min(cfg.micro_batch_size, effective // world_size))
    if effective % (micro * world_size):
        raise ConfigError(f"batch_size {effective} is not a multiple of micro_batch_size {micro} x "
                          f"{world_size} process(es)")
    return effective, micro, effective // (micro * world_size)


def resolve_bf16(precision: str) -> bool:
    """bf16 autocast only where the hardware runs bf16 natively (here it is ~4x slower than fp32)."""
    from delia.models import resolve_dtype

    if precision != "auto":
        return precision == "bf16"
    return resolve_dtype("auto", "cuda" if torch.cuda.is_available() else "cpu") == torch.bfloat16


def trained_precision(trainer, model) -> Precision:
    """The precision the forward actually ran in: the weights' dtype and accelerate's autocast, if any."""
    acc = trainer.accelerator
    autocast = acc.mixed_precision if acc.native_amp and acc.mixed_precision in ("bf16", "fp16") else None
    return Precision(SHORT[model.dtype], autocast)


def _special_tokens(cfg: TrainConfig) -> list[str]:
    # Config tokens first, then the manifest's, without repeats.
    return list(dict.fromkeys([*cfg.special_tokens, *manifest_special_tokens(cfg.data)]))


def _resume_hash(cfg: TrainConfig, free: tuple[str, ...] = RESUME_FREE) -> str:
    return config_hash({k: v for k, v in to_dict(cfg).items()
                        if k not in free and not (k in LATE_OPTIONAL and v is None)})


def _finished_hash(cfg: TrainConfig) -> str:
    # A finished run is only "the same run" if it also stopped at the same max_steps and merged alike.
    return _resume_hash(cfg, tuple(f for f in RESUME_FREE if f not in ("max_steps", "merge")))


def _module_name(model, module) -> str:
    return next(n for n, m in model.named_modules() if m is module)


def token_side(cfg: TrainConfig) -> str:
    """The rows of the new tokens that train: 'both' (input and output; unset means this) or 'input'."""
    return cfg.token_side or "both"


def lora_config(cfg: TrainConfig, model, token_ids: list[int]):
    """PEFT LoraConfig: LoRA on `target_modules` plus the new tokens' rows on the input embedding, and with
    token_side both on the output embedding too.

    With token_side input a tied model must have been untied first (`compat.untie_output_embeddings`):
    PEFT ties a tied model's head to the input rows' adapter even when only the input embedding is named.
    """
    from peft import LoraConfig

    from delia.models import is_tied

    trainable = None
    if cfg.train_new_tokens and token_ids:
        trainable = {_module_name(model, model.get_input_embeddings()): token_ids}
        if token_side(cfg) == "both" and model.get_output_embeddings() is not None:
            # On a tied model PEFT sees both names share a weight and wraps the head with a tied adapter
            # (one delta for both sides); on an untied model the head gets its own trainable rows.
            trainable[_module_name(model, model.get_output_embeddings())] = token_ids
        elif is_tied(model):
            raise ValueError("token_side=input on a tied model: untie the output embedding first")
    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM",
                      trainable_token_indices=trainable, ensure_weight_tying=bool(trainable) and is_tied(model))


def sft_config(cfg: TrainConfig, run_dir: Path, micro: int, accum: int, bf16: bool, world_size: int):
    """TRL SFTConfig with every field whose default differs from the recipe set explicitly."""
    from trl import SFTConfig

    cuda = torch.cuda.is_available()
    sampling = {"rebalance": "batch_rebalance", "random": "random", "packed": "random"}[cfg.batching]
    return SFTConfig(
        output_dir=str(run_dir / "checkpoints"),
        learning_rate=cfg.learning_rate, lr_scheduler_type=cfg.lr_scheduler_type,
        # transformers 5: a float in [0, 1) is a ratio of the total steps
        warmup_steps=cfg.warmup_ratio if cfg.warmup_ratio is not None else cfg.warmup_steps,
        weight_decay=cfg.weight_decay, num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=micro, gradient_accumulation_steps=accum,
        seed=cfg.seed, data_seed=cfg.seed,
        bf16=bf16, fp16=False, use_cpu=not cuda,
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=cfg.logging_steps, logging_first_step=True,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        report_to=loggers(cfg),
        max_length=cfg.max_length, packing=cfg.batching == "packed", packing_strategy="bfd",
        completion_only_loss=True, shuffle_dataset=cfg.batching == "packed",
        train_sampling_strategy=sampling, dataloader_drop_last=False, dataloader_num_workers=0,
        ddp_backend=("gloo" if not cuda else None) if world_size > 1 else None,
        ddp_find_unused_parameters=False,
        **cfg.trl,
    )


def loggers(cfg: TrainConfig) -> list[str]:
    """`report_to` for TrainingArguments: TensorBoard is left out, as each run adds its own logger for it
    (`compat.tensorboard_callback`, writing to RUN/tensorboard)."""
    return [r for r in cfg.report_to if r != "tensorboard"]


def expected_padding(lengths: list[int], cfg: TrainConfig, effective: int, micro: int, accum: int,
                     world_size: int) -> float | None:
    """Padding fraction of the micro-batches the chosen sampler will build for rank 0 in epoch 0."""
    if cfg.batching == "packed":
        return None
    if cfg.batching == "rebalance":
        from transformers.trainer_pt_utils import BatchRebalanceSampler

        sampler = BatchRebalanceSampler(lengths, effective_batch_size=effective, dp_size=world_size,
                                        grad_accum=accum, seed=42, drop_last=False)  # Trainer uses its default seed
        return padding_fraction(lengths, list(sampler))
    order = random.Random(cfg.seed).sample(range(len(lengths)), len(lengths))
    return padding_fraction(lengths, [order[i:i + micro] for i in range(0, len(order), micro)])


def run_train(cfg: TrainConfig, callbacks: list | None = None) -> TrainResult:
    """Train a LoRA adapter (and the new tokens' rows) and write the run directory.

    The run directory is locked for the whole call (a second process on it fails at once). Checkpoints are
    sealed when complete; a rerun resumes from the newest sealed one (see `delia.training.checkpoints`).

    Args:
        cfg: the resolved training config (`data` and `out` required).
        callbacks: extra `transformers.TrainerCallback`s (tests use one to simulate an interruption).
    Returns:
        TrainResult with the run directory and final step. A finished run with the same config is skipped.
    Raises:
        ConfigError, DataError, RunError: bad config, bad rows, or a run directory holding something else.
        LockError: another process is training into the same directory.
    """
    if not cfg.data or not cfg.out:
        raise ConfigError("train needs data (--data) and out (--out)")
    from delia.files import locked_dir

    try:  # TRL's own checks of the options (scheduler names, incompatible flags) before anything loads
        with warnings.catch_warnings():  # its deprecation notes come again when the real config is built
            warnings.simplefilter("ignore")
            sft_config(cfg, Path(cfg.out), 1, 1, resolve_bf16(cfg.precision), 1)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"trl / TrainingArguments rejects the options: {e}") from None

    # Only rank 0 takes the lock: the other processes of a multi-process run share the directory.
    lock = locked_dir(cfg.out, "training run") if int(os.environ.get("RANK", "0")) == 0 else contextlib.nullcontext()
    with lock:
        return _train(cfg, callbacks)


def _train(cfg: TrainConfig, callbacks: list | None) -> TrainResult:
    from datasets import Dataset
    from trl import SFTTrainer

    from delia import __version__
    from delia.models import add_special_tokens, is_tied, load_model, load_tokenizer, model_identity, resolve_model
    from delia.training.checkpoints import SEALED_MARK, CheckpointSeal, pick_checkpoint, total_train_loss
    from delia.training.progress import TrainLog

    # ---- run directory: skip a finished identical run, resume an interrupted one
    run_dir = Path(cfg.out)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    main_process = int(os.environ.get("RANK", "0")) == 0
    if (run_dir / RUN_FILE).exists():
        try:
            done = json.loads((run_dir / RUN_FILE).read_text())
        except ValueError:
            raise RunError(f"{run_dir / RUN_FILE}: not valid JSON; remove the run directory or choose another "
                           f"--out") from None
        if done.get("finished_hash") == _finished_hash(cfg):
            log.info("%s already holds this finished run; skipping", run_dir)
            return TrainResult(run_dir, done.get("global_step", 0), done.get("train_loss"), None, skipped=True)
        raise RunError(f"{run_dir}: holds a finished run with another config; choose another --out")
    saved = (run_dir / "train_config.yaml").read_text() if (run_dir / "train_config.yaml").exists() else ""
    # Runs written before checkpoints were sealed are judged by their trainer_state.json instead.
    # (only rank 0 removes incomplete checkpoints; every rank reaches the same choice)
    last = pick_checkpoint(run_dir, sealed=SEALED_MARK in saved or not saved, remove=main_process)
    if last and cfg.resume == "never":
        raise RunError(f"{run_dir}: has checkpoints ({last.name}) and resume=never; remove them or "
                       f"choose another --out")
    if not last and cfg.resume == "always":
        raise RunError(f"{run_dir}: resume=always but there is no complete checkpoint to resume from")
    resume_from = str(last) if last else None
    if resume_from:
        if f"resume_hash: {_resume_hash(cfg)}" not in saved:
            raise RunError(f"{run_dir}: checkpoints come from a different config (train_config.yaml); resume with "
                           f"the same settings or choose another --out")
    local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    torch.set_num_threads(cfg.threads or max(1, (os.cpu_count() or 1) // local_procs))

    # ---- data
    records = read_training_records(cfg.data, cfg.data_format)
    tokenizer = load_tokenizer(cfg.model)
    tokens = _special_tokens(cfg)

    # ---- base model + special tokens (seeded: resize's own init of any padding rows uses the global RNG)
    torch.manual_seed(cfg.seed)
    model = load_model(cfg.model, dtype="fp32")  # fp32 master weights; bf16 runs as autocast
    info = add_special_tokens(model, tokenizer, tokens, init=cfg.token_init,
                              description=cfg.token_description or None, seed=cfg.token_seed,
                              sigma=cfg.token_sigma, pad_to_multiple_of=cfg.pad_vocab_to) if tokens else None
    token_ids = sorted(set(info.ids)) if info else []
    side = token_side(cfg) if cfg.train_new_tokens and token_ids else None  # None: no token row trains
    if cfg.init_adapter:  # a second stage starts from that run's token rows (its adapter is applied below)
        continue_from(cfg.init_adapter, model, info, cfg.model, side)
    data = prepare_rows(records, tokenizer, cfg.max_length)
    unused = [t for t, i in zip(tokens, info.ids if info else []) if not any(i in r["input_ids"] for r in data.rows)]
    if unused:
        log.warning("special token(s) %s never occur in %s: their rows get no gradient", unused, cfg.data)
    dataset = Dataset.from_list([{"input_ids": r["input_ids"],
                                  "labels": [t if m else -100 for t, m in zip(r["input_ids"], r["completion_mask"])]}
                                 for r in data.rows])
    effective, micro, accum = resolve_batch(len(data.rows), cfg, world_size)
    bf16 = resolve_bf16(cfg.precision)
    if resume_from and cfg.precision == "auto":  # a resumed run keeps the precision it started in, whatever
        started = checkpoint_bf16(resume_from)    # `auto` picks on this machine (another CPU, a new probe)
        if started is not None and started != bf16:
            log.warning("%s: resuming in the precision it started in (%s), not the %s that precision auto picks "
                        "on this machine", run_dir, "bf16 autocast" if started else "fp32",
                        "bf16 autocast" if bf16 else "fp32")
            bf16 = started
    lengths = [len(r["input_ids"]) for r in data.rows]
    padding = expected_padding(lengths, cfg, effective, micro, accum, world_size)

    if main_process:
        import yaml

        from delia.files import write_text_atomic

        run_dir.mkdir(parents=True, exist_ok=True)
        # atomic: a kill while rewriting it must not lose the resume hash of the checkpoints beside it
        write_text_atomic(run_dir / "train_config.yaml", yaml.safe_dump(to_dict(cfg), sort_keys=False)
                          + f"# resume_hash: {_resume_hash(cfg)}\n{SEALED_MARK}\n")
        if info is not None:
            save_new_rows(model, info.old_rows, run_dir / ROWS_FILE)

    # ---- trainer
    tied = is_tied(model)  # the base's tying, before any untying or PEFT wrapping of the head
    untie_head = tied and side == "input"
    if untie_head:
        # The head gets its own frozen copy of the initial matrix, so only the input rows train and the output
        # rows keep their initial values; load_trained unties the same way before applying the adapter.
        untie_output_embeddings(model)
    args = sft_config(cfg, run_dir, micro, accum, bf16, world_size)
    history = read_log(run_dir / LOG_FILE) if resume_from else []
    train_log = TrainLog(run_dir / LOG_FILE, history)
    # this run's TensorBoard directory, passed to its own logger (not through the process environment)
    logs_tensorboard = "tensorboard" in cfg.report_to and main_process
    tensorboard = [tensorboard_callback(run_dir / "tensorboard")] if logs_tensorboard else []
    selection = None
    if cfg.validation is not None:  # the prompts are built (and checked) before any step trains
        from delia.training.validation import ValidationCallback, build_validator, read_history

        selection = ValidationCallback(cfg.validation, build_validator(cfg.validation, tokenizer, run_dir), run_dir,
                                       read_history(run_dir) if resume_from else [])
    with warnings.catch_warnings():
        # PEFT warns that ensure_weight_tying found no tied module among the *LoRA* targets; the tying it
        # ensures here is the token rows' (see lora_config), which it does apply.
        warnings.filterwarnings("ignore", message=".*ensure_weight_tying.*")
        peft_config = lora_config(cfg, model, token_ids)
        if cfg.init_adapter:  # continue the earlier run's adapter (LoRA and token rows), trainable
            from peft import PeftModel

            model, peft_config = PeftModel.from_pretrained(model, cfg.init_adapter, is_trainable=True), None
        trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=tokenizer,
                             peft_config=peft_config, callbacks=[*tensorboard, CheckpointSeal(),
                                                                 *([selection] if selection else []),
                                                                 *(callbacks or [])])
    run_callback_first(trainer, train_log)  # so tokens/s reaches every logger
    peft_model = trainer.model
    patch_fused_head(peft_model)
    # The adapter must not carry full embedding copies: the trained rows are in it, the rest is the base's.
    save_without_embedding_layers(peft_model)
    log.info("training %d rows: effective batch %d = %d micro x %d accum x %d proc; bf16=%s; padding %.1f%%",
             len(data.rows), effective, micro, accum, world_size, bf16, 100 * (padding or 0))

    t0 = time.perf_counter()
    try:
        with compact_fused_head(cfg.compact_head):
            out = trainer.train(resume_from_checkpoint=resume_from)
    except Exception as e:  # a full disk or a vanished directory while saving a checkpoint
        why = write_failure(e)
        if why is None:
            raise
        if main_process:
            pick_checkpoint(run_dir)  # frees the half-written checkpoint now
        hint = "the disk is full: free space and " if "No space left" in why else ""
        raise RunError(f"{run_dir}: cannot write a checkpoint ({why}); {hint}rerun the same command to resume from "
                       f"the last complete checkpoint") from None
    seconds = time.perf_counter() - t0
    resumed_step = int(resume_from.rsplit("-", 1)[-1]) if resume_from else 0
    train_loss = total_train_loss(trainer.state.log_history, resumed_step, out.training_loss,
                                  trainer.state.global_step)

    # ---- artifacts: the best validated step's weights when validating, else the last step's
    selected = selection.restore_best(peft_model) if selection else None
    trainer.save_model(str(run_dir))
    precision = trained_precision(trainer, model)
    if trainer.is_world_process_zero():
        meta = {
            "format": 1, "delia_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "base_model": cfg.model, "base_source": resolve_model(cfg.model).kind,
            "base_identity": model_identity(cfg.model), "tied": tied,
            "special_tokens": info.to_dict() if info else {"tokens": [], "ids": [], "old_rows": 0, "new_rows": 0},
            "trained_token_ids": token_ids if cfg.train_new_tokens else [],
            "token_side": side, "untied_head": untie_head,  # load_trained unties the head when untied_head
            "unused_special_tokens": unused,
            "data": {"path": str(cfg.data), **data.summary()},
            "batch": {"effective": effective, "micro": micro, "accum": accum, "processes": world_size,
                      "batching": cfg.batching, "expected_padding_fraction": padding},
            "precision": "bf16-autocast" if bf16 else "fp32",
            "dtype": precision.to_dict(),  # what reloading restores (delia.precision)
            "global_step": trainer.state.global_step, "train_loss": train_loss,
            "resumed_from": resume_from, "train_seconds": round(seconds, 1), "selection": selected,
            "config": to_dict(cfg), "resume_hash": _resume_hash(cfg), "finished_hash": _finished_hash(cfg),
        }
        if cfg.merge:
            # merged from the fp32 master weights and saved as such: rounding them to the autocast dtype would
            # lose precision the trained forward had; delia_dtype.json tells load_model to autocast them again
            merged_dir = run_dir / "merged"
            peft_model.merge_and_unload().save_pretrained(str(merged_dir))
            tokenizer.save_pretrained(str(merged_dir))
            write_recorded(merged_dir, precision)
            meta["merged"] = "merged"
        write_json(run_dir / RUN_FILE, meta)
    return TrainResult(run_dir, trainer.state.global_step, train_loss, resume_from)

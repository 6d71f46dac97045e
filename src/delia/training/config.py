"""`TrainConfig`: every knob of `delia train`, defaulting to the DELIA paper's LoRA recipe."""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from typing import Any

from delia.config import DEFAULT_TOKEN, ConfigError, opt

PAPER_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
VALIDATION_METRICS = ("auto", "label_accuracy", "task_valid", "chrf", "macro_f1")


@dataclass
class ValidationConfig:
    """Generation-based validation and early stopping (unset in TrainConfig: no validation, the last step kept)."""

    eval: dict[str, Any] = opt(help="EvalConfig fields of the validation prompts (task, data, the task's options; "
                                    "`delia run` writes them: the validation rows under the validation phrasings)")
    every: int | None = opt(None, help="validate every N optimizer steps (default: about 10 times per run)")
    patience: int = opt(3, help="stop after this many validations without improvement")
    min_steps: int = opt(0, help="never stop before this step")
    metric: str = opt("auto", help="auto (label_accuracy with labels, chrf for text, else task_valid) | "
                                   "label_accuracy | task_valid | chrf | macro_f1")
    max_new_tokens: int | None = opt(None, help="generation budget (default: twice the gold replies' p99 length, "
                                                "at least 16)")
    batch_size: int = opt(32, help="prompts per forward pass")

    def __post_init__(self) -> None:
        if not isinstance(self.eval, dict) or not self.eval.get("data") or not self.eval.get("task"):
            raise ConfigError("validation.eval: give at least task and data (the validation prompts)")
        if self.every is not None and self.every < 1:
            raise ConfigError(f"validation.every must be >= 1, got {self.every}")
        if self.patience < 1 or self.min_steps < 0 or self.batch_size < 1:
            raise ConfigError("validation: patience and batch_size must be >= 1 and min_steps >= 0")
        if self.metric not in VALIDATION_METRICS:
            raise ConfigError(f"validation.metric: {self.metric!r} is not one of {', '.join(VALIDATION_METRICS)}")
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise ConfigError(f"validation.max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class TrainConfig:
    """LoRA SFT through TRL/PEFT. Defaults are the paper's recipe (baselines.md section 0)."""

    data: str = opt("", help="Training JSONL (chat `messages` rows ending with an assistant turn).")
    out: str = opt("", help="Run directory: adapter, tokenizer, delia_run.json, logs, checkpoints.")
    model: str = opt("smollm2-135m-instruct", help="Base model: embedded name, .gguf file, HF directory or hub id.")
    data_format: str = opt("auto", help="Input format name (see `delia ls formats`), or auto.")

    # new special tokens
    special_tokens: list[str] = opt([DEFAULT_TOKEN], help="Tokens to add and train (union with DIR/manifest.json's).")
    token_init: str = opt("mean_vocab", help="Init of new rows: random | mean | mean_vocab.")
    token_description: str = opt("", help="Text averaged for token_init=mean.")
    token_seed: int = opt(2024, help="Seed for token_init=random.")
    token_sigma: float | None = opt(None, help="Std for token_init=random (default: config.initializer_range).")
    pad_vocab_to: int | None = opt(None, help="Round the embedding rows up to a multiple (the authors used 64).")
    train_new_tokens: bool = opt(True, help="Train the new tokens' rows (input, and output when untied).")
    # None (unset) is `both`, so configs and experiment step hashes from before the option stay as they were.
    token_side: str | None = opt(None, help="Which rows of the new tokens train: both (unset: the input and the "
                                            "output row; one shared row on tied models) | input (the input row "
                                            "only; the LM head keeps the initial row, tied models get an "
                                            "untied frozen head).")

    # LoRA
    lora_r: int = opt(16, help="LoRA rank.")
    lora_alpha: int = opt(16, help="LoRA alpha.")
    lora_dropout: float = opt(0.05, help="LoRA dropout.")
    target_modules: list[str] = opt(PAPER_TARGETS, help="Modules that get LoRA.")

    # optimisation
    learning_rate: float = opt(2e-4, help="Peak learning rate.")
    lr_scheduler_type: str = opt("constant_with_warmup", help="transformers scheduler name.")
    warmup_steps: int = opt(25, help="Warm-up steps (the paper's 25; a 99-row run never leaves warm-up).")
    warmup_ratio: float | None = opt(None, help="Warm-up as a fraction of the steps; replaces warmup_steps.")
    weight_decay: float = opt(0.01, help="AdamW weight decay.")
    epochs: float = opt(1.0, help="Epochs over the data.")
    batch_size: int | None = opt(None, help="Effective batch (rows per optimizer step); default 64, 16 below 256 rows.")
    # 2: length-rebalanced groups of ~2 rows pad <3% on the 100 halu rows (7% at 4). Whether fewer, larger
    # micro-batches run faster on CPU is not settled (docs/RESULTS.md). GPUs want more (configs/train_gpu.yaml).
    micro_batch_size: int = opt(2, help="Average rows per forward pass per process (memory vs speed).")
    max_length: int = opt(1024, help="Tokens per row; longer rows are truncated (counted and reported).")
    max_steps: int = opt(-1, help="Train exactly this many optimizer steps (smoke runs; the equal-steps control), "
                                  "repeating the data as needed and ignoring epochs; -1 = run all epochs.")
    seed: int = opt(42, help="Seed for shuffling, dropout and the Trainer.")

    # speed
    precision: str = opt("auto", help="auto (bf16 autocast where the hardware has native bf16) | bf16 | fp32.")
    batching: str = opt("rebalance", help="rebalance (length-balanced micro-batches) | random | packed (GPU+flash).")
    gradient_checkpointing: bool = opt(False, help="Trade compute for memory (off: small models fit anyway).")
    compact_head: bool = opt(True, help="On CPU, compute LM-head logits only where the loss is (replies).")
    threads: int | None = opt(None, help="torch threads per process (default: cores / local processes).")

    # artifacts and logging
    save_steps: int = opt(10, help="Checkpoint every N optimizer steps (for resume).")
    save_total_limit: int = opt(2, help="Checkpoints kept.")
    resume: str = opt("auto", help="auto (resume when RUN has checkpoints) | always | never.")
    merge: bool = opt(False, help="Also write a merged full model to RUN/merged.")
    report_to: list[str] = opt(["tensorboard"], help="Trainer integrations (tensorboard, wandb, none...).")
    logging_steps: int = opt(1, help="Log loss and tokens/s every N steps.")
    trl: dict[str, Any] = opt({}, help="Extra SFTConfig fields passed through to TRL as is.")
    # None (unset) leaves the step hashes of runs from before model selection as they were
    validation: ValidationConfig | None = field(default=None, metadata={"help": "generation-based validation "
                                                "every few steps, early stopping, and the best step kept as the "
                                                "run's model (RUN/validation.json); unset: the last step"})
    init_adapter: str | None = opt(None, help="Continue this finished run's adapter and token rows instead of a "
                                              "fresh LoRA (a second training stage, e.g. DMT); its LoRA shape "
                                              "applies, the lora_* options here are ignored.")

    def __post_init__(self) -> None:
        if isinstance(self.validation, dict):  # TrainConfig(validation={...}) from Python, as YAML gives
            from delia.config import from_dict

            self.validation = from_dict(ValidationConfig, self.validation, where="validation")
        if self.token_init not in ("random", "mean", "mean_vocab"):
            raise ConfigError(f"token_init: {self.token_init!r} is not one of random, mean, mean_vocab")
        if self.token_init == "mean" and not self.token_description:
            raise ConfigError("token_init=mean needs token_description (the text whose tokens are averaged)")
        if self.token_side not in (None, "input", "both"):
            raise ConfigError(f"token_side: {self.token_side!r} is not one of input, both")
        if self.token_side is not None and not self.train_new_tokens:
            raise ConfigError(f"token_side={self.token_side} needs train_new_tokens=true (with false no token row "
                              f"trains)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ConfigError(f"precision: {self.precision!r} is not one of auto, bf16, fp32")
        if self.batching not in ("rebalance", "random", "packed"):
            raise ConfigError(f"batching: {self.batching!r} is not one of rebalance, random, packed")
        if self.resume not in ("auto", "always", "never"):
            raise ConfigError(f"resume: {self.resume!r} is not one of auto, always, never")
        for name in ("learning_rate", "weight_decay", "epochs", "lora_dropout"):
            if not math.isfinite(getattr(self, name)):
                raise ConfigError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.learning_rate < 0:  # 0 is allowed: a continued stage that must not move (tests, ablations)
            raise ConfigError(f"learning_rate must be >= 0, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.weight_decay < 0:
            raise ConfigError(f"warmup_steps and weight_decay must be >= 0, got {self.warmup_steps} and "
                              f"{self.weight_decay}")
        if self.token_sigma is not None and not (math.isfinite(self.token_sigma) and self.token_sigma > 0):
            raise ConfigError(f"token_sigma must be > 0, got {self.token_sigma}")
        for name in ("lora_r", "lora_alpha", "micro_batch_size", "max_length", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.batch_size is not None and self.batch_size % min(self.micro_batch_size, self.batch_size):
            raise ConfigError(f"batch_size {self.batch_size} is not a multiple of micro_batch_size "
                              f"{self.micro_batch_size}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.warmup_ratio is not None and not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.epochs <= 0:
            raise ConfigError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ConfigError(f"max_steps must be -1 or >= 1, got {self.max_steps}")
        if "embed_tokens" in self.target_modules and self.train_new_tokens:
            raise ConfigError("target_modules has embed_tokens and train_new_tokens=true: choose one way to train "
                              "the new token (LoRA on embed_tokens moves every row's input embedding; see "
                              "docs/training.md)")
        clash = {"learning_rate", "output_dir", "max_steps", "seed", "bf16", "per_device_train_batch_size",
                 "gradient_accumulation_steps", "max_length"} & set(self.trl)
        if clash:
            raise ConfigError(f"trl: {sorted(clash)} are TrainConfig fields; set them there, not under trl")
        if self.lr_scheduler_type != "constant_with_warmup":
            from transformers.trainer_utils import SchedulerType

            names = [s.value for s in SchedulerType]
            if self.lr_scheduler_type not in names:
                close = difflib.get_close_matches(self.lr_scheduler_type, names, n=1)
                raise ConfigError(f"lr_scheduler_type: {self.lr_scheduler_type!r} is not a transformers scheduler"
                                  + (f"; did you mean {close[0]}?" if close else f" ({', '.join(names)})"))
        if self.trl:
            self._check_trl()

    def _check_trl(self) -> None:
        """Unknown SFTConfig keys (with the closest match) and wrongly typed values fail here, at config time,
        not after the model has loaded."""
        import dataclasses
        import typing

        from trl import SFTConfig

        from delia.config import _coerce, _unwrap_optional

        names = [f.name for f in dataclasses.fields(SFTConfig) if f.init]
        try:
            hints = typing.get_type_hints(SFTConfig)
        except Exception:  # an annotation this Python cannot resolve: check names only
            hints = {}
        for key, value in self.trl.items():
            if key not in names:
                close = difflib.get_close_matches(key, names, n=2)
                hint = f"; did you mean {' or '.join(close)}?" if close else ""
                raise ConfigError(f"trl.{key}: not an SFTConfig option{hint}")
            tp = _unwrap_optional(hints.get(key))
            if tp in (bool, int, float, str) and value is not None:
                coerced = _coerce(value, tp, f"trl.{key}")
                if isinstance(value, str):  # only a YAML-1.1 number string changes (hashes stay as they were)
                    self.trl[key] = coerced


def effective_batch(n_rows: int, batch_size: int | None) -> int:
    """Rows per optimizer step: `batch_size`, else the paper's rule (64, or 16 when the data has < 256 rows)."""
    return batch_size or (64 if n_rows >= 256 else 16)


def optimizer_steps(cfg: TrainConfig, n_rows: int) -> int:
    """Optimizer steps a run of `cfg` on `n_rows` rows takes: `max_steps` when set, else
    ceil(epochs x ceil(rows / effective batch)), the Trainer's own count (the last batch of an epoch may be short;
    packed batching packs rows, so it takes fewer)."""
    if cfg.max_steps > 0:
        return cfg.max_steps
    return math.ceil(cfg.epochs * math.ceil(n_rows / effective_batch(n_rows, cfg.batch_size)))

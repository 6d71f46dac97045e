"""A finished training run as a merged Hugging Face directory that every serving stack loads.

The LoRA adapter and the learned token rows are merged into the weights (the same merge `delia eval` generates
with, `merge_adapter`), the vocabulary keeps the new rows (tied and untied heads alike), and the tokenizer is
saved with the new tokens as special tokens, so `AutoModelForCausalLM.from_pretrained(OUT)` and
`AutoTokenizer.from_pretrained(OUT)` need nothing from delia. `generation_config.json` holds the settings delia
evaluated with (greedy, the evaluation's budget); `delia_task.json` says how to prompt the model.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from delia.errors import UserError

log = logging.getLogger(__name__)

DTYPES = ("base", "fp32", "bf16", "fp16")
TASK_FILE = "delia_task.json"


class ExportError(UserError, ValueError):
    """A run that cannot be exported as asked; the message says what to do."""


def base_dtype(base: str) -> str:
    """The dtype the base model's weights are stored in (its config.json), as fp32 / bf16 / fp16.

    The embedded GGUF base is dequantised to fp32 once (`delia.models.ensure_local`), so it reads fp32."""
    from delia.models import ensure_local

    path = Path(ensure_local(base))
    cfg = json.loads((path / "config.json").read_text()) if (path / "config.json").exists() else {}
    name = str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")
    return {"bfloat16": "bf16", "float16": "fp16"}.get(name, "fp32")


def write_hf(run_dir: Path, out: Path, dtype: str = "base", budget: int | None = None) -> dict[str, Any]:
    """Merge `run_dir` into `out` (a new, empty directory) and check it reloads with plain transformers.

    Args:
        run_dir: a finished `delia train` run (RUN/ with delia_run.json and the adapter).
        out: where the model directory is written (the caller renames it into place).
        dtype: 'base' (the base model's stored dtype) or fp32 / bf16 / fp16. delia merges in fp32 first, then
            casts, so a fp32 export is the exact model `delia eval` measured in fp32.
        budget: `max_new_tokens` for generation_config.json (None: the base's own setting).
    Returns:
        What was written: dtype, vocabulary size, the special tokens with their ids, tied or not.
    """
    from delia.models import is_tied, resolve_dtype
    from delia.training import load_trained, read_run_meta

    meta = read_run_meta(run_dir)
    if dtype not in DTYPES:
        raise ExportError(f"--dtype {dtype!r} is not one of {', '.join(DTYPES)}")
    target = base_dtype(meta["base_model"]) if dtype == "base" else dtype
    # fp32 master weights, merged there (no autocast hooks: a served model computes in its stored dtype)
    model, tok = load_trained(run_dir, dtype="fp32", merge=True)
    model = model.to(resolve_dtype(target))
    for attr in ("quantization_config",):  # a GGUF base's trace; the export is plain weights
        if hasattr(model.config, attr):
            delattr(model.config, attr)
    tokens = meta["special_tokens"]["tokens"]
    if tokens:  # registered as special, so they survive a reload as one token and decode as themselves
        tok.add_special_tokens({"additional_special_tokens": list(tokens)}, replace_extra_special_tokens=False)
    model.generation_config = generation_config(model, tok, budget)
    model.save_pretrained(str(out))
    tok.save_pretrained(str(out))
    info = {"dtype": target, "vocab_rows": model.get_input_embeddings().weight.shape[0], "tied": is_tied(model),
            "tokens": {t: tok.convert_tokens_to_ids(t) for t in tokens}, "base_model": meta["base_model"]}
    del model
    check_reload(out, info)
    return info


def generation_config(model, tok, budget: int | None):
    """The base's generation config set to what delia evaluated with: greedy decoding, its budget, its stops."""
    from transformers import GenerationConfig

    base = model.generation_config.to_dict() if model.generation_config is not None else {}
    keep = {k: base[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id") if base.get(k) is not None}
    keep.setdefault("eos_token_id", tok.eos_token_id)
    keep.setdefault("pad_token_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
    cfg = GenerationConfig(do_sample=False, **keep, **({"max_new_tokens": budget} if budget else {}))
    cfg.temperature = cfg.top_p = cfg.top_k = None  # greedy: no sampling knobs to warn about
    return cfg


def check_reload(out: Path, info: dict[str, Any]) -> None:
    """Reload `out` with plain transformers: each new token must be one special token with its trained id, and
    the embedding must have the exported rows."""
    from transformers import AutoConfig, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(out))
    for token, tid in info["tokens"].items():
        ids = tok(token, add_special_tokens=False)["input_ids"]
        if ids != [tid] or token not in tok.all_special_tokens:
            raise ExportError(f"{out}: the saved tokenizer reads {token!r} as {ids}, not the one special token "
                              f"{tid} the model learned")
    cfg = AutoConfig.from_pretrained(str(out))
    if cfg.vocab_size < info["vocab_rows"]:
        raise ExportError(f"{out}: config.json has vocab_size {cfg.vocab_size} < {info['vocab_rows']} rows")


def task_file(run_dir: Path, exp_dir: Path | None, meta: dict[str, Any]) -> dict[str, Any]:
    """How to prompt the exported model: the token(s) and what they stand for, the phrasings it was trained on,
    one training prompt as an example (from the run's own files; the `delia run` task when there is one)."""
    from delia.data import read_records

    out: dict[str, Any] = {"special_tokens": meta["special_tokens"]["tokens"],
                           "trained_on": (meta.get("data") or {}).get("path") or meta.get("config", {}).get("data")}
    valid = ((meta.get("config") or {}).get("validation") or {}).get("eval") or {}
    custom = valid.get("custom") or {}
    if custom.get("token_description"):
        out["token_stands_for"] = custom["token_description"]
    if exp_dir is not None and (exp_dir / "data" / "task.json").exists():
        task = json.loads((exp_dir / "data" / "task.json").read_text())
        out["task"] = {k: task[k] for k in ("name", "task", "keys", "values", "label_key") if k in task}
        seen = exp_dir / "data" / "instructions_seen.txt"
        if seen.exists():
            out["phrasings_trained"] = [x for x in seen.read_text(encoding="utf-8").splitlines() if x.strip()]
    data = (meta.get("config") or {}).get("data")
    if data and Path(data).exists():  # a task row, one that uses the learned token when there is one
        tokens = out["special_tokens"]
        rows = [r for r in read_records(data) if r.extra.get("source", "downstream") == "downstream"
                and any(m["role"] == "user" for m in r.prompt_messages)]
        with_token = [r for r in rows if any(t in m["content"] for t in tokens for m in r.prompt_messages)]
        rec = (with_token or rows or [None])[0]
        if rec is not None:
            out["example"] = {"messages": rec.prompt_messages, "reply": rec.response}
    return out

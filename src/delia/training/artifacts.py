"""What a training run leaves in RUN/, and how to load it back onto a fresh base model.

RUN/ layout (format 1):
    adapter_config.json, adapter_model.safetensors   PEFT adapter: LoRA + the trained rows of the new tokens
    tokenizer*.json, special_tokens_map.json ...      the tokenizer with the new token(s)
    new_rows.safetensors                              the embedding rows added by the resize, as initialised
    delia_run.json                                    base model + identity, special-token info, resolved config,
                                                      the precision trained in (`dtype`, restored on reload),
                                                      the token side and whether the head was untied
    train_log.json                                    loss, learning rate and tokens/s per logged step
    checkpoints/checkpoint-N/                         Trainer checkpoints (resume)
    tensorboard/                                      TensorBoard event files
    merged/                                           a merged full model (only with --merge; fp32 weights and
                                                      delia_dtype.json, the autocast to run them under)

The adapter holds the trained token rows but not the full embedding matrices (`save_embedding_layers=False`):
loading needs the base resized first, which `load_trained` does from `delia_run.json`.
"""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path
from typing import Any

from delia.errors import UserError

log = logging.getLogger(__name__)

RUN_FILE = "delia_run.json"
ROWS_FILE = "new_rows.safetensors"
LOG_FILE = "train_log.json"
FORMAT = 1


class RunError(UserError, ValueError):
    """A run directory that cannot be loaded or resumed; the message names the directory and what is wrong."""


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically (temporary file, then rename) so an interrupt never leaves half a file."""
    from delia.files import write_json_atomic

    write_json_atomic(path, data, indent=1)


def read_run_meta(run_dir: str | Path) -> dict[str, Any]:
    """The parsed `delia_run.json` of a run directory.

    Raises:
        RunError: the directory holds no finished run.
    """
    run_dir = Path(run_dir)
    meta_path = run_dir / RUN_FILE
    if not meta_path.exists():
        hint = ""
        if (run_dir / "checkpoints").is_dir():
            hint = " (it has checkpoints: the run was interrupted; rerun `delia train` with the same --out to resume)"
        raise RunError(f"{run_dir}: no {RUN_FILE}, not a finished delia training run{hint}")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise RunError(f"{meta_path}: unknown run format {meta.get('format')!r} (this delia reads {FORMAT})")
    if not (run_dir / "adapter_model.safetensors").exists():
        raise RunError(f"{run_dir}: adapter_model.safetensors missing")
    return meta


def save_new_rows(model, old_rows: int, path: str | Path) -> None:
    """Save the embedding rows [old_rows:] (input, and output when untied) exactly as initialised."""
    from safetensors.torch import save_file

    from delia.models import is_tied

    tensors = {"input": model.get_input_embeddings().weight[old_rows:].detach().float().contiguous().clone()}
    if not is_tied(model) and model.get_output_embeddings() is not None:
        tensors["output"] = model.get_output_embeddings().weight[old_rows:].detach().float().contiguous().clone()
    save_file(tensors, str(path))


def continue_from(run_dir: str | Path, model, info, base: str, side: str | None = None) -> None:
    """Prepare `model` (resized by `add_special_tokens` as in that run) to continue a finished run: check the
    base, tokens and token side match and write back the run's initial token rows. Wrap it with the run's
    adapter afterwards (`PeftModel.from_pretrained(model, run_dir, is_trainable=True)`), after untying the head
    as that run did (`untied_head`).

    Args:
        side: this run's token side ('input' / 'both'; None when it trains no token row).
    Raises:
        RunError: not a finished run, another base model, other special tokens or another token side.
    """
    import torch
    from safetensors.torch import load_file

    from delia.models import model_identity

    run_dir = Path(run_dir)
    meta = read_run_meta(run_dir)
    if meta.get("base_identity") != model_identity(base):
        raise RunError(f"{run_dir}: trained on {meta['base_model']}, not {base}; init_adapter needs the same base")
    st = meta["special_tokens"]
    if st["tokens"] != (info.tokens if info else []) or st["ids"] != (info.ids if info else []):
        raise RunError(f"{run_dir}: its special tokens {st['tokens']} (ids {st['ids']}) differ from this run's; "
                       f"init_adapter needs the same special_tokens")
    if meta.get("trained_token_ids") and side is not None and run_side(meta) != side:
        raise RunError(f"{run_dir}: trained token_side={run_side(meta)}, this run asks {side}; init_adapter "
                       f"continues that run's token rows, set token_side: {run_side(meta)}")
    if not st["tokens"]:
        return
    rows = load_file(str(run_dir / ROWS_FILE))
    with torch.no_grad():
        model.get_input_embeddings().weight[st["old_rows"]:] = rows["input"]
        if "output" in rows:
            model.get_output_embeddings().weight[st["old_rows"]:] = rows["output"]


def run_side(meta: dict[str, Any]) -> str:
    """The token side a run trained ('both' for runs that predate the option)."""
    return meta.get("token_side") or "both"


def restore_new_rows(model, new_rows: int, old_rows: int, path: str | Path | None) -> None:
    """Resize `model` to `new_rows` and write back the rows saved by `save_new_rows`.

    Rows of tokens the adapter trains are replaced by the adapter anyway; writing the saved init keeps any
    extra padding rows (pad_to_multiple_of) bit-identical too, so logits match training exactly.
    """
    from delia.models import is_tied

    rows = model.get_input_embeddings().weight.shape[0]
    if rows != old_rows:
        raise RunError(f"the base model has {rows} embedding rows but the run was trained on a base with "
                       f"{old_rows}: wrong base model?")
    if new_rows == old_rows:
        return
    tied = is_tied(model)
    model.resize_token_embeddings(new_rows, mean_resizing=False)
    if tied and not is_tied(model):
        raise RunError("resizing untied the base model's embeddings")
    if path is None or not Path(path).exists():
        log.warning("no %s: rows beyond the trained tokens keep transformers' random init", ROWS_FILE)
        return
    import torch
    from safetensors.torch import load_file

    saved = load_file(str(path))
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        emb[old_rows:] = saved["input"].to(emb.dtype)
        if "output" in saved and not is_tied(model):
            out = model.get_output_embeddings().weight
            out[old_rows:] = saved["output"].to(out.dtype)


# `precision` as runs recorded it before `dtype` existed (always fp32 master weights; "bf16-autocast" = TRL's bf16)
LEGACY_PRECISION = {"fp32": {"weights": "fp32", "autocast": None}, "bf16-autocast": {"weights": "fp32",
                                                                                   "autocast": "bf16"}}


def run_precision(run_dir: str | Path, meta: dict[str, Any] | None = None):
    """The `Precision` the run trained in (`delia_run.json` `dtype`; for older runs their `precision` string,
    which named the same thing), or None for runs that record neither.

    Raises:
        RunError: the record is malformed.
    """
    from delia.precision import Precision

    meta = read_run_meta(run_dir) if meta is None else meta
    if meta.get("dtype") is None:
        # Loading these as bf16 weights (the old 'auto') evaluated them in another precision than they trained in.
        legacy = LEGACY_PRECISION.get(meta.get("precision"))
        return Precision(**legacy) if legacy else None
    try:
        return Precision.from_dict(meta["dtype"], f"{Path(run_dir) / RUN_FILE}: dtype")
    except ValueError as e:
        raise RunError(str(e)) from None


def load_trained(run_dir: str | Path, dtype: str = "auto", device: str = "cpu", base: str | None = None,
                 merge: bool = False):
    """Load a finished run: the base model, resized and initialised as in training, with the adapter applied.

    Args:
        run_dir: the `--out` directory of `delia train`.
        dtype: 'auto': as trained (the weights' dtype and autocast recorded in `delia_run.json`, so the logits
            are the trained ones bit for bit; older runs: their recorded `precision`; runs with neither: bf16
            where the hardware supports it, else fp32). 'bf16', 'fp32' or 'fp16': plain weights in that dtype, no autocast.
        device: torch device string.
        base: load onto this model name/path instead of the one recorded in the run (its identity must match
            unless it is the same name; use for a moved local directory).
        merge: merge LoRA and token rows into the weights (faster generation; logits then differ by rounding;
            bit-identical to loading RUN/merged of a `--merge` run with dtype 'auto').
    Returns:
        (model, tokenizer): a `peft.PeftModel` in eval mode (a plain model when `merge`) and the run's tokenizer.
    Raises:
        RunError: the directory is not a finished run, or the base model does not match.
    """
    from peft import PeftModel
    from transformers import AutoTokenizer

    from delia.models import load_model, model_identity
    from delia.precision import use_autocast

    run_dir = Path(run_dir)
    meta = read_run_meta(run_dir)
    base_name = base or meta["base_model"]
    identity = model_identity(base_name)
    if identity != meta.get("base_identity"):
        raise RunError(f"{run_dir}: trained on {meta['base_model']} ({meta.get('base_identity')}), but "
                       f"{base_name} is {identity}; pass the right base")
    precision = run_precision(run_dir, meta) if dtype == "auto" else None
    model = load_model(base_name, dtype=precision.weights if precision else dtype, device=device)
    tok = AutoTokenizer.from_pretrained(str(run_dir))
    info = meta["special_tokens"]
    restore_new_rows(model, info["new_rows"], info["old_rows"], run_dir / ROWS_FILE)
    if meta.get("untied_head"):  # token_side input on a tied base: the head kept the initial rows, untied
        from delia.training.compat import untie_output_embeddings

        untie_output_embeddings(model)
    for token, tid in zip(info["tokens"], info["ids"]):
        if tok.convert_tokens_to_ids(token) != tid:
            raise RunError(f"{run_dir}: tokenizer maps {token!r} to {tok.convert_tokens_to_ids(token)}, "
                           f"the run trained id {tid}")
    with warnings.catch_warnings():  # the adapter's `ensure_weight_tying` with no tied LoRA module: nothing to tie
        warnings.filterwarnings("ignore", message="You have requested `ensure_weight_tying`", category=UserWarning)
        model = PeftModel.from_pretrained(model, str(run_dir), is_trainable=False, torch_device=device)
    if merge:
        model = model.merge_and_unload()
    if precision and precision.autocast:  # after merging: the merge itself runs in the weights' dtype
        use_autocast(model, precision.autocast, device)
    return model.eval(), tok


def write_failure(e: BaseException) -> str | None:
    """The reason when `e` is a failed write (OSError, or what safetensors / torch.save raise for one), else None."""
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)
    text = str(e)
    # safetensors: "I/O error: No space left on device (os error 28)"; torch.save: "... file write failed"
    if type(e).__name__ == "SafetensorError" or "file write failed" in text or "os error" in text:
        return "No space left on device" if ("os error 28" in text or "No space left" in text) else text[:200]
    return None


def read_log(path: Path) -> list[dict[str, Any]]:
    try:
        return json.loads(path.read_text()) if path.exists() else []
    except json.JSONDecodeError:
        return []

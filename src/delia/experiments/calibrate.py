"""Cost-model calibration for `--dry-run`: a tiny measurement on this machine, cached per CPU, dtype and torch.

`delia experiment CONFIG --dry-run --calibrate` runs it once (about a minute on 2 cores): it times loading the
embedded model, sampling 8 one-shot Alpaca prompts x 16 tokens, and one LoRA training step on 4 halu rows, in
the dtype `auto` picks here, and writes seconds per unit of work to `$DELIA_CACHE/calibration/KEY.json`
(KEY: CPU model, dtype, torch version, torch threads). Estimates then use it whenever the experiment keeps the
shipped `cost:` defaults; a `cost:` the user set wins. Fields not measured directly are scaled from the nearest
measured one by the shipped defaults' ratios. Nothing here enters a step hash.
"""

from __future__ import annotations

import hashlib
import json
import platform
import time
from dataclasses import asdict, fields
from pathlib import Path

from delia.experiments.config import CostModel

_SAMPLE_ROWS, _SAMPLE_TOKENS, _TRAIN_ROWS = 8, 16, 4


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_key(dtype: str | None = None) -> dict[str, str]:
    """What a calibration depends on: CPU model, the dtype `auto` picks (or `dtype`), torch version, threads."""
    import torch

    from delia.models import resolve_dtype

    name = dtype or {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(resolve_dtype("auto"), "fp32")
    return {"cpu": cpu_model(), "dtype": name, "torch": torch.__version__, "threads": str(torch.get_num_threads())}


def calibration_path(key: dict[str, str]) -> Path:
    """$DELIA_CACHE/calibration/<digest of the key>.json."""
    from delia.data.sources import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "calibration" / f"{digest}.json"


def measure(model: str | None = None, dtype: str | None = None) -> dict[str, float]:
    """Seconds per unit of work for the CostModel fields, measured on a tiny workload (see the module doc)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from delia.data import read_records
    from delia.data.sources import resolve_source
    from delia.generation import GenParams, generate
    from delia.models import DEFAULT_MODEL, load, load_model
    from delia.sampling import load_queries, sample_prompt
    from delia.training.data import prepare_rows

    model, dtype = model or DEFAULT_MODEL, dtype or machine_key()["dtype"]
    t = time.perf_counter()
    lm, tok = load(model, dtype=dtype)
    model_load = time.perf_counter() - t

    prompts = [sample_prompt(q) for q in load_queries("builtin:diverse/alpaca_5000", limit=_SAMPLE_ROWS)]
    generate(lm, tok, prompts[:1], GenParams(max_new_tokens=2))  # warm-up
    t = time.perf_counter()
    generate(lm, tok, prompts, GenParams(max_new_tokens=_SAMPLE_TOKENS, temperature=0.7, top_p=0.95),
             batch_size=_SAMPLE_ROWS)
    sample_token = (time.perf_counter() - t) / (_SAMPLE_ROWS * _SAMPLE_TOKENS)  # per token of budget

    # one LoRA step (forward, backward, AdamW) on halu rows, under autocast in the 16-bit dtypes as delia trains
    rows = prepare_rows(read_records(resolve_source("builtin:halu/train"))[:_TRAIN_ROWS], tok, 512).rows
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"] + [tok.pad_token_id] * (width - len(r["input_ids"])) for r in rows])
    att = torch.tensor([[1] * len(r["input_ids"]) + [0] * (width - len(r["input_ids"])) for r in rows])
    peft = get_peft_model(load_model(model, dtype="fp32"), LoraConfig(
        r=16, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    opt = torch.optim.AdamW([p for p in peft.parameters() if p.requires_grad], lr=1e-4)
    auto = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(dtype)
    times = []
    for _ in range(2):  # the first step warms up
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=auto or torch.bfloat16, enabled=auto is not None):
            loss = peft(input_ids=ids, attention_mask=att, labels=ids.masked_fill(att == 0, -100)).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - t)
    train_row = times[-1] / len(rows)

    d = CostModel()
    return {"sample_token": sample_token, "eval_token": sample_token * d.eval_token / d.sample_token,
            "train_row": train_row, "train_diverse_row": train_row * d.train_diverse_row / d.train_row,
            "score_row": train_row * d.score_row / d.train_row, "model_load": model_load}


def calibrate(model: str | None = None) -> Path:
    """Measure on this machine and cache the result; returns the cache file."""
    key = machine_key()
    path = calibration_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, "cost": measure(model, key["dtype"])}, indent=1) + "\n")
    tmp.replace(path)
    return path


RATES = ("sample_token", "eval_token", "train_row", "train_diverse_row", "score_row", "model_load")


def calibrated(cost: CostModel) -> tuple[CostModel, Path | None]:
    """The cost model an estimate uses: this machine's calibration when one is cached and `cost` is the shipped
    default (a user's own rates in `cost:` win; `row_tokens` and `early_stop` are not rates); else `cost`. Returns (cost model, calibration file or None)."""
    default = CostModel()
    if any(getattr(cost, k) != getattr(default, k) for k in RATES):  # the user's own rates win
        return cost, None
    path = calibration_path(machine_key())
    try:
        measured = json.loads(path.read_text())["cost"]
    except (OSError, ValueError, KeyError):
        return cost, None
    known = {f.name for f in fields(CostModel)}
    return CostModel(**{**asdict(cost), **{k: float(v) for k, v in measured.items() if k in known}}), path

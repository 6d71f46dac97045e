"""How a model computes: its weights' dtype and the autocast its forward runs under.

A training run records this (`Precision`) and reloading restores it, so a reloaded model computes the trained
logits bit for bit on any machine. It matters because `precision: bf16` training keeps fp32 master weights and
runs every forward under `torch.autocast(bf16)` (accelerate's mixed precision): neither an fp32 load (no
autocast) nor a bf16 load (norms, residuals and embeddings in bf16 too) reproduces those logits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

DTYPE_FILE = "delia_dtype.json"  # in a merged model directory: the Precision to load it with
TORCH: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
SHORT: dict[torch.dtype, str] = {v: k for k, v in TORCH.items()}


@dataclass(frozen=True)
class Precision:
    """weights: the parameters' dtype; autocast: the dtype torch.autocast ran the forward in (None: none)."""

    weights: str = "fp32"
    autocast: str | None = None

    def __post_init__(self) -> None:
        if self.weights not in TORCH:
            raise ValueError(f"weights: {self.weights!r} is not one of {', '.join(TORCH)}")
        if self.autocast is not None and self.autocast not in ("bf16", "fp16"):
            raise ValueError(f"autocast: {self.autocast!r} is not one of bf16, fp16 or null")

    @property
    def name(self) -> str:
        """'fp32', 'bf16', or 'fp32+bf16-autocast'."""
        return f"{self.weights}+{self.autocast}-autocast" if self.autocast else self.weights

    def to_dict(self) -> dict[str, Any]:
        return {"weights": self.weights, "autocast": self.autocast}

    @classmethod
    def from_dict(cls, data: Any, where: str) -> Precision:
        """Parse a recorded precision; `where` (e.g. 'RUN/delia_run.json: dtype') prefixes any error."""
        if not isinstance(data, dict) or set(data) - {"weights", "autocast"}:
            raise ValueError(f"{where}: expected {{weights, autocast}}, got {data!r}")
        try:
            return cls(**data)
        except (TypeError, ValueError) as e:
            raise ValueError(f"{where}: {e}") from None


def read_recorded(model_dir: str | Path) -> Precision | None:
    """The Precision recorded in a model directory (`delia train --merge` writes one), or None."""
    path = Path(model_dir) / DTYPE_FILE
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}:{e.lineno}: not JSON: {e.msg}") from None
    return Precision.from_dict(data, str(path))


def write_recorded(model_dir: str | Path, precision: Precision) -> None:
    (Path(model_dir) / DTYPE_FILE).write_text(json.dumps(precision.to_dict()) + "\n")


def use_autocast(model, dtype: str, device: str = "cpu") -> None:
    """Run every forward of `model` under torch.autocast(`dtype`), floating outputs cast back to fp32: what
    accelerate does to the model it trains with mixed precision, so the logits match training bit for bit.

    The innermost transformers model is wrapped, so PEFT's forward and our decode loop go through it too. On a
    plain (merged) model the nn.Linear weights no other module shares are cast to `dtype` once here: autocast
    would round them the same way on every call (bit-identical, tested), and casting once makes a decode step
    ~1.5x faster (a 576x1536 linear at batch 16: 208 vs 311 us). Shared weights stay: a tied LM head is the
    embedding matrix, whose lookups autocast leaves in fp32. A PeftModel keeps its fp32 weights so that it can
    still be merged exactly.
    """
    from accelerate.utils import convert_outputs_to_fp32

    torch_dtype = TORCH[dtype]
    peft = hasattr(model, "get_base_model")
    inner = model.get_base_model() if peft else model
    if not peft:
        uses: dict[int, int] = {}
        for module in inner.modules():
            for p in module.parameters(recurse=False):
                uses[id(p)] = uses.get(id(p), 0) + 1
        for module in inner.modules():
            if isinstance(module, torch.nn.Linear) and uses[id(module.weight)] == 1:
                module.to(torch_dtype)
    forward = torch.autocast(device_type=torch.device(device).type, dtype=torch_dtype)(inner.forward)
    inner.forward = convert_outputs_to_fp32(forward)
    inner.delia_precision = Precision(SHORT[inner.dtype], dtype)


def precision_of(model) -> Precision:
    """The Precision a model computes in (`use_autocast` records its own; otherwise the weights' dtype)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    recorded = getattr(inner, "delia_precision", None)
    return recorded if recorded is not None else Precision(SHORT.get(inner.dtype, "fp32"))

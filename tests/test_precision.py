"""delia.precision: the recorded precision of a model directory, and running a model as trained under autocast."""

from __future__ import annotations

import shutil

import pytest
import torch

from delia import models
from delia.precision import DTYPE_FILE, Precision, precision_of, use_autocast, write_recorded


def _logits(model, autocast: bool = False) -> torch.Tensor:
    ids = torch.tensor([[1, 5, 9, 200, 3000, 7]])
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.no_grad(), ctx:
        return model(input_ids=ids).logits.float()


def test_precision_record_is_validated():
    assert Precision.from_dict({"weights": "fp32", "autocast": "bf16"}, "x").name == "fp32+bf16-autocast"
    assert Precision.from_dict({"weights": "bf16", "autocast": None}, "x").name == "bf16"
    with pytest.raises(ValueError, match="^RUN: dtype: weights: 'int8' is not one of fp32, bf16, fp16$"):
        Precision.from_dict({"weights": "int8"}, "RUN: dtype")
    with pytest.raises(ValueError, match="^F: expected"):
        Precision.from_dict({"weights": "fp32", "autocats": "bf16"}, "F")


@pytest.mark.parametrize("kind", ["tied", "untied"])
def test_use_autocast_is_bit_identical_to_torch_autocast(kind, request):
    """Casting the unshared linear weights once gives what autocast's per-call cast gives, bit for bit."""
    d = request.getfixturevalue("tiny_dir" if kind == "tied" else "tiny_untied_dir")
    want = _logits(models.load_model(d, dtype="fp32"), autocast=True)
    model = models.load_model(d, dtype="fp32")
    use_autocast(model, "bf16")
    assert precision_of(model) == Precision("fp32", "bf16") and model.dtype == torch.float32
    assert model.model.layers[0].self_attn.q_proj.weight.dtype == torch.bfloat16
    # a tied head is the embedding matrix, which autocast leaves in fp32; an untied one is cast
    head = torch.float32 if kind == "tied" else torch.bfloat16
    assert model.lm_head.weight.dtype == head and model.model.embed_tokens.weight.dtype == torch.float32
    got = _logits(model)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    assert not torch.equal(got, _logits(models.load_model(d, dtype="fp32")))  # autocast did change the logits


def test_model_dir_with_a_recorded_precision(tiny_dir, tmp_path):
    """`dtype: auto` loads a directory as recorded in delia_dtype.json; an explicit dtype overrides it."""
    d = tmp_path / "merged"
    shutil.copytree(tiny_dir, d)
    write_recorded(d, Precision("fp32", "bf16"))
    assert precision_of(models.load_model(str(d))) == Precision("fp32", "bf16")
    assert precision_of(models.load_model(str(d), dtype="fp32")) == Precision("fp32")
    assert precision_of(models.load_model(str(d), dtype="bf16")) == Precision("bf16")
    (d / DTYPE_FILE).write_text('{"weights": "fp32",\n "autocast": bf16}')
    with pytest.raises(models.ModelNotFoundError, match=rf"{DTYPE_FILE}:2: not JSON"):
        models.load_model(str(d))

"""GGUF export of a real model: conversion time and size per type, the learned token's place in each GGUF, and how
close the GGUF's weights are to the Hugging Face model's (read back with transformers' GGUF loader).

The model is the embedded SmolLM2-135M-Instruct (or --model) with `<sep>` added as delia's training adds it, saved
as an HF directory and converted with llama.cpp's converter (`delia.export.gguf`). The read-back compares next-token
logits on a few chat prompts: it checks the weights and the vocabulary in the file, not llama.cpp's kernels.

    nice python benchmarks/export_gguf.py [--quants f16,q8_0] [--fetch-converter] [--converter PATH]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from delia.export import gguf
from delia.models import DEFAULT_MODEL, add_special_tokens, load

PROMPTS = ["Is this sentence English or Icelandic? <sep>\n\nÉg er að fara heim.",
           "Classify the support ticket above. <sep>\n\nMy printer is on fire."]


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits[0].float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--quants", default="f16,q8_0")
    ap.add_argument("--converter", default=None)
    ap.add_argument("--fetch-converter", action="store_true")
    args = ap.parse_args()
    script = gguf.find_converter(args.converter, fetch=args.fetch_converter)
    model, tok = load(args.model, dtype="fp32")
    info = add_special_tokens(model, tok, ["<sep>"])
    chats = [tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
             for p in PROMPTS]
    ids = [tok(c, add_special_tokens=False, return_tensors="pt").input_ids for c in chats]
    ref = [logits(model, i) for i in ids]
    from transformers import AutoModelForCausalLM

    with tempfile.TemporaryDirectory() as tmp:
        hf_dir = Path(tmp) / "hf"
        model.save_pretrained(hf_dir)
        tok.save_pretrained(hf_dir)
        rows = []
        for q in args.quants.split(","):
            t0 = time.perf_counter()
            out = gguf.convert(hf_dir, Path(tmp) / f"model-{q}.gguf", outtype=q, converter=script)
            secs = time.perf_counter() - t0
            check = gguf.check_tokens(out, hf_dir, ["<sep>"])["<sep>"]
            back = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=out.name, dtype=torch.float32).eval()
            got = [logits(back, i) for i in ids]
            diff = max((a - b).abs().max().item() for a, b in zip(ref, got))
            agree = sum((a.argmax(-1) == b.argmax(-1)).sum().item() for a, b in zip(ref, got)) / \
                sum(len(a) for a in ref)
            rows.append((q, secs, out.stat().st_size / 2**20, check, diff, agree))
            del back
    f16_mb = next((r[2] for r in rows if r[0] == "f16"), rows[0][2])
    print(f"model {args.model} + <sep> (HF id {info.ids[0]}), converter {script}")
    print(f"{'type':6} {'convert s':>9} {'MiB':>7} {'vs f16':>6}  {'<sep> in GGUF':22} {'max |dlogit|':>12} "
          f"{'argmax agree':>12}")
    for q, secs, mb, check, diff, agree in rows:
        where = f"{check['type']} id {check['id']}"
        print(f"{q:6} {secs:9.1f} {mb:7.1f} {mb / f16_mb:6.2f}  {where:22} {diff:12.4f} {agree:12.1%}")


if __name__ == "__main__":
    main()

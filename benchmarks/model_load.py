"""Embedded model load time: first load (dequantise the GGUF into the cache) vs a cached load.

Usage: python benchmarks/model_load.py
Prints both times and the ratio, measured in one run with a fresh temporary cache.
"""

from __future__ import annotations

import os
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as cache:
        os.environ["DELIA_CACHE"] = cache
        from delia.models import DEFAULT_MODEL, chat, load

        t0 = time.perf_counter()
        model, tok = load(DEFAULT_MODEL)
        first = time.perf_counter() - t0
        del model
        t0 = time.perf_counter()
        model, tok = load(DEFAULT_MODEL)
        cached = time.perf_counter() - t0
        reply = chat(model, tok, [{"role": "user", "content": "What is the capital of France?"}], 20)
    print(f"first load (dequantise GGUF + save cache): {first:.1f} s")
    print(f"cached load (safetensors):                 {cached:.1f} s")
    print(f"ratio: {first / cached:.1f}x   dtype: {model.dtype}   reply: {reply!r}")


if __name__ == "__main__":
    main()

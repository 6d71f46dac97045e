"""`transformers` engine: the local model through `delia.generation.generate` (CPU or GPU).

Batches are length-sorted, finished rows leave the batch and new prompts join it (see `delia.generation`).
dtype 'auto' picks bf16 only where the hardware computes it natively (GPU, AVX-512 BF16 / AMX CPUs), else fp32.
"""

from __future__ import annotations

from collections.abc import Sequence

from delia.generation import Generation, GenParams, Prompt
from delia.sampling.engines.base import ENGINES, OnBatch, StopFn


@ENGINES.register("transformers", help="Local HF / GGUF / embedded model; batched, length-sorted, per-row stop")
class TransformersEngine:
    """Args:
        model: model name or path (`delia.models.resolve_model`).
        dtype: auto | bf16 | fp32 | fp16.
        device: 'cpu', 'cuda', 'cuda:1', ... ('auto': cuda when available).
        batch_size: rows per forward pass.
        threads: torch CPU threads (None leaves torch's default).
    """

    name = "transformers"

    def __init__(self, model: str, dtype: str = "auto", device: str = "auto", batch_size: int = 32,
                 threads: int | None = None) -> None:
        import torch

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if threads:
            torch.set_num_threads(threads)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model, self.batch_size, self.device, self.dtype = model, batch_size, device, dtype
        self._lm = self._tokenizer = None

    def _load(self) -> None:
        # Loaded on first use: a rerun whose rows are all cached never pays for the model load.
        if self._lm is None:
            from delia.models import load

            self._lm, self._tokenizer = load(self.model, dtype=self.dtype, device=self.device)

    @property
    def lm(self):
        """The loaded model."""
        self._load()
        return self._lm

    @property
    def tokenizer(self):
        """The model's tokenizer."""
        self._load()
        return self._tokenizer

    def attach(self, lm, tokenizer) -> TransformersEngine:
        """Use an already loaded model (e.g. `delia eval`'s, with its adapter and added tokens) instead of
        loading `model`."""
        self._lm, self._tokenizer = lm, tokenizer
        return self

    def identity(self) -> str:
        from delia.models import model_identity

        return model_identity(self.model)

    def generate(self, prompts: Sequence[Prompt], params: GenParams, on_batch: OnBatch | None = None,
                 stop_fn: StopFn | None = None) -> list[Generation]:
        """One Generation per prompt; on_batch gets each finished batch; stop_fn is checked every token."""
        from delia.generation import generate

        return generate(self.lm, self.tokenizer, prompts, params, batch_size=self.batch_size, stop_fn=stop_fn,
                        on_batch=on_batch)

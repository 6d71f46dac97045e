"""`vllm` engine: offline batched generation with vLLM on GPUs (optional extra: `pip install 'delia-tune[vllm]'`).

UNVERIFIED here: the development machine has no GPU and no vLLM. The prompt/parameter mapping is pure and
unit-tested against a fake `vllm` module; the import is lazy so a missing vLLM is a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from delia.generation import Generation, GenParams, Prompt
from delia.sampling.engines.base import ENGINES, EngineError, OnBatch, StopFn, stop_at


def sampling_kwargs(params: GenParams) -> dict[str, Any]:
    """`vllm.SamplingParams` keyword arguments for delia's GenParams."""
    kw: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": params.temperature,
                          "top_p": params.top_p if params.temperature > 0 else 1.0, "seed": params.seed}
    if params.stop:
        kw["stop"] = list(params.stop)
    return kw


def to_generation(output: Any) -> Generation:
    """A `vllm.RequestOutput` (first completion) as a Generation."""
    c = output.outputs[0]
    return Generation(c.text, len(output.prompt_token_ids or []), len(c.token_ids),
                      "length" if c.finish_reason == "length" else "stop")


@ENGINES.register("vllm", help="vLLM offline batching on GPUs (optional extra; tensor_parallel_size option)")
class VllmEngine:
    """Args:
        model: a local HF directory or hub id (GGUF names resolve through `delia.models.ensure_local`).
        tensor_parallel_size: GPUs to shard the model over.
        dtype: 'auto', 'bfloat16', 'float16' or 'float32' (passed to vLLM).
        gpu_memory_utilization: fraction of GPU memory vLLM may use.
        chunk: rows handed to vLLM per call (each chunk is reported through on_batch).
        max_model_len: context length limit (None: the model's).
    """

    name = "vllm"

    def __init__(self, model: str, tensor_parallel_size: int = 1, dtype: str = "auto",
                 gpu_memory_utilization: float = 0.9, chunk: int = 1024, max_model_len: int | None = None) -> None:
        try:
            import vllm
        except ImportError:
            raise EngineError("the vllm engine needs vLLM and a GPU: pip install 'delia-tune[vllm]' "
                              "(or use --engine transformers, or --engine openai against a vLLM server)") from None
        from delia.models import ensure_local

        self.model, self.chunk, self._vllm = model, chunk, vllm
        dtype = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}.get(dtype, dtype)  # delia's names
        kw: dict[str, Any] = {"tensor_parallel_size": tensor_parallel_size, "dtype": dtype,
                              "gpu_memory_utilization": gpu_memory_utilization}
        if max_model_len:
            kw["max_model_len"] = max_model_len
        self.llm = vllm.LLM(model=ensure_local(model), **kw)

    def identity(self) -> str:
        from delia.models import model_identity

        return model_identity(self.model)

    def generate(self, prompts: Sequence[Prompt], params: GenParams, on_batch: OnBatch | None = None,
                 stop_fn: StopFn | None = None) -> list[Generation]:
        """Chat prompts go through `LLM.chat`, strings through `LLM.generate`, `chunk` rows at a time;
        `stop_fn` cuts each returned text (`stop_at`)."""
        sp = self._vllm.SamplingParams(**sampling_kwargs(params))
        results: list[Generation] = []
        for start in range(0, len(prompts), self.chunk):
            part = list(prompts[start:start + self.chunk])
            if all(isinstance(p, str) for p in part):
                outs = self.llm.generate(part, sp, use_tqdm=False)
            elif not any(isinstance(p, str) for p in part):
                outs = self.llm.chat(part, sp, use_tqdm=False)
            else:
                raise ValueError("a vllm call cannot mix chat and string prompts")
            gens = [stop_at(to_generation(o), stop_fn) for o in outs]
            results += gens
            if on_batch:
                on_batch(list(range(start, start + len(part))), gens)
        return results

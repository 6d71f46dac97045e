"""GGUF files for llama.cpp (and Ollama) with llama.cpp's own converter, and a check of the learned tokens in them.

The converter is `convert_hf_to_gguf.py` from llama.cpp. It is not on PyPI as a package of its own, but the
source distribution of `llama-cpp-python` bundles llama.cpp (vendor/llama.cpp) with the script, its `conversion`
package and `gguf-py`. `find_converter` takes, in this order: the path it is given, $DELIA_LLAMA_CPP, a copy
cached under the delia cache (`llama.cpp/<version>/`), or, only when asked (`fetch=True`, the CLI's
`--fetch-converter`), downloads that sdist with pip (no build, no dependencies), keeps the converter's ~3 MB of
it and drops the rest. `convert` runs the script in a subprocess with this interpreter (torch, transformers,
numpy, sentencepiece from the environment; gguf-py from the same llama.cpp tree, as the script itself prefers),
writing to a temporary name that is renamed into place only when the converter succeeded.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path, PurePosixPath
from typing import Any

from delia.data.sources import cache_dir
from delia.errors import UserError

# llama-cpp-python's sdist that the converter is taken from; bump it to follow llama.cpp (architectures added).
LLAMA_CPP_PYTHON = "0.3.36"
CONVERTER_ENV = "DELIA_LLAMA_CPP"
SCRIPT = "convert_hf_to_gguf.py"
# What `convert_hf_to_gguf.py --outtype` writes that we support (it also has tq1_0/tq2_0, ternary-model only).
OUTTYPES: dict[str, str] = {
    "f16": "16-bit floats (lossless for a bf16/fp16 model; the usual llama.cpp input)",
    "q8_0": "8-bit blocks with one scale per 32 weights, about half the size of f16, near-lossless",
    "bf16": "bfloat16 (lossless for a bf16 model; slower than f16 on CPUs without bf16)",
    "f32": "32-bit floats (lossless, twice f16)",
}
# The parts of vendor/llama.cpp the converter reads (models/templates: chat templates a few architectures load).
_KEEP = (SCRIPT, "conversion/", "gguf-py/", "models/templates/", "LICENSE")
# Modules the converter imports for a Llama-family model (sentencepiece even for BPE tokenizers: it tries that
# first); module name -> pip package.
_NEEDS = {"torch": "torch", "numpy": "numpy", "transformers": "transformers", "safetensors": "safetensors",
          "sentencepiece": "sentencepiece", "yaml": "pyyaml", "tqdm": "tqdm"}
# Token types llama.cpp's tokenizer matches verbatim in text (CONTROL only when parsing special tokens, as
# llama-server and Ollama do for the rendered prompt); any other entry can be split by the BPE merges.
_VERBATIM = ("CONTROL", "USER_DEFINED")


class GGUFError(UserError, ValueError):
    """The GGUF export cannot go on (no converter, the converter failed, a learned token is not one token)."""


# ---------------------------------------------------------------- finding the converter


def converter_cache(version: str = LLAMA_CPP_PYTHON) -> Path:
    """Where `fetch_converter` keeps the converter of llama-cpp-python `version`."""
    return cache_dir() / "llama.cpp" / version


def find_converter(path: str | Path | None = None, fetch: bool = False) -> Path:
    """The path of llama.cpp's `convert_hf_to_gguf.py`.

    Args:
        path: a llama.cpp checkout (or any directory holding the script) or the script itself; tried first.
        fetch: when neither `path`, $DELIA_LLAMA_CPP nor the cache has it, download it (PyPI, ~75 MB once).
    Returns:
        The script's path.
    Raises:
        GGUFError: nothing found (the message says how to get it), or a given path without the script.
    """
    if path is not None:
        return _script_in(Path(path), f"{path}")
    if os.environ.get(CONVERTER_ENV):
        return _script_in(Path(os.environ[CONVERTER_ENV]), f"{CONVERTER_ENV}={os.environ[CONVERTER_ENV]}")
    cached = converter_cache() / SCRIPT
    if cached.is_file():
        return cached
    if fetch:
        return fetch_converter()
    raise GGUFError(
        f"the GGUF export needs llama.cpp's {SCRIPT}: pass --fetch-converter to download it once "
        f"(llama-cpp-python=={LLAMA_CPP_PYTHON}'s source from PyPI, into {converter_cache()}), "
        f"or point --converter or {CONVERTER_ENV} at a llama.cpp checkout")


def _script_in(path: Path, given: str) -> Path:
    """`path` itself when it is the script, else `path/convert_hf_to_gguf.py`; a GGUFError when neither."""
    path = path.expanduser()
    script = path if path.is_file() else path / SCRIPT
    if not script.is_file() or script.name != SCRIPT:
        raise GGUFError(f"{given}: no {SCRIPT} there (give a llama.cpp checkout or the script itself)")
    return script.resolve()


def fetch_converter(version: str = LLAMA_CPP_PYTHON) -> Path:
    """Download llama-cpp-python `version`'s sdist and keep its converter in `converter_cache(version)`.

    The download is pip's (`pip download --no-deps --no-binary :all:`, so nothing is installed or built); the
    files are extracted into a temporary directory that is renamed into place, so the cache holds a complete
    converter or none.
    """
    dest = converter_cache(version)
    if (dest / SCRIPT).is_file():
        return dest / SCRIPT
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".download-") as tmp:
        sdist = _pip_download(version, Path(tmp))
        tree = Path(tmp) / "llama.cpp"
        _extract_converter(sdist, tree)
        (tree / "delia_source.json").write_text(json.dumps({"package": "llama-cpp-python", "version": version,
                                                            "sdist": sdist.name}) + "\n")
        with contextlib.suppress(OSError):  # another process won the race: its copy is as good as ours
            tree.rename(dest)
    if not (dest / SCRIPT).is_file():
        raise GGUFError(f"{dest}: the converter could not be put there")
    return dest / SCRIPT


def _pip_download(version: str, into: Path) -> Path:
    """The sdist `llama_cpp_python-<version>.tar.gz`, downloaded by pip into `into`."""
    cmd = [sys.executable, "-m", "pip", "download", f"llama-cpp-python=={version}", "--no-deps",
           "--no-binary", ":all:", "--dest", str(into), "--quiet"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
    if done.returncode != 0 or not found:
        raise GGUFError(f"downloading llama-cpp-python=={version} failed (pip exit {done.returncode}): "
                        f"{_tail(done.stderr or done.stdout)}")
    return found[0]


def _extract_converter(sdist: Path, into: Path) -> None:
    """Copy the converter's files out of the sdist's vendor/llama.cpp into `into` (regular files only)."""
    n = 0
    with tarfile.open(sdist, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or not member.isfile():
                continue
            rel = PurePosixPath(*parts[3:])
            if ".." in rel.parts or not any(str(rel) == k or str(rel).startswith(k) for k in _KEEP):
                continue
            target = into.joinpath(*rel.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
            n += 1
    if not (into / SCRIPT).is_file() or not (into / "gguf-py" / "gguf").is_dir():
        raise GGUFError(f"{sdist.name} holds no vendor/llama.cpp/{SCRIPT} with gguf-py ({n} files taken); "
                        f"pin another llama-cpp-python version")


# ---------------------------------------------------------------- converting


def missing_requirements() -> list[str]:
    """The pip packages the converter imports that this environment lacks."""
    return [pkg for mod, pkg in _NEEDS.items() if importlib.util.find_spec(mod) is None]


def convert(hf_dir: str | Path, out_file: str | Path, outtype: str = "f16",
            converter: str | Path | None = None) -> Path:
    """Convert a Hugging Face model directory to one GGUF file with llama.cpp's converter.

    Args:
        hf_dir: a directory with config.json, the safetensors weights and the tokenizer files.
        out_file: the GGUF to write; it appears only when the conversion succeeded (written under a temporary
            name beside it, then renamed).
        outtype: one of OUTTYPES.
        converter: the script or a llama.cpp checkout; None: `find_converter()` (no download).
    Returns:
        `out_file`.
    Raises:
        GGUFError: an unknown outtype, no converter, missing Python packages, or the converter's failure with
            the last lines it printed.
    """
    hf_dir, out_file = Path(hf_dir), Path(out_file)
    if outtype not in OUTTYPES:
        raise GGUFError(f"GGUF type {outtype!r}: choose from {', '.join(OUTTYPES)}")
    if not (hf_dir / "config.json").is_file():
        raise GGUFError(f"{hf_dir}: not a Hugging Face model directory (no config.json)")
    script = find_converter(converter)
    if missing := missing_requirements():
        raise GGUFError(f"llama.cpp's converter needs {', '.join(missing)}: pip install {' '.join(missing)}")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(f".{out_file.name}.tmp{os.getpid()}.gguf")
    try:
        done = subprocess.run(_command(script, hf_dir, tmp, outtype), capture_output=True, text=True,
                              env=_converter_env(script))
        if done.returncode != 0 or not tmp.is_file():
            raise GGUFError(f"{SCRIPT} could not convert {hf_dir} to {outtype} (exit {done.returncode}): "
                            f"{_tail(done.stderr or done.stdout)}")
        os.replace(tmp, out_file)
    finally:
        tmp.unlink(missing_ok=True)
    return out_file


def _command(script: Path, hf_dir: Path, out: Path, outtype: str) -> list[str]:
    return [sys.executable, str(script), str(hf_dir), "--outfile", str(out), "--outtype", outtype]


def _converter_env(script: Path) -> dict[str, str]:
    """This environment with the script's own gguf-py first on the path (it must match the script's version;
    the script inserts it itself unless NO_LOCAL_GGUF is set, which we drop)."""
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    gguf_py = script.parent / "gguf-py"
    if gguf_py.is_dir():
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(gguf_py), env.get("PYTHONPATH")) if p)
    return env


def _tail(text: str, lines: int = 6) -> str:
    """The last non-empty lines of a subprocess's output, indented under the error's first line."""
    last = [line.rstrip() for line in text.splitlines() if line.strip()][-lines:]
    return "\n  " + "\n  ".join(last) if last else "(no output)"


# ---------------------------------------------------------------- reading GGUF files


def _reader(gguf_file: str | Path):
    try:
        from gguf import GGUFReader
    except ImportError as e:  # a declared dependency of delia; only a broken environment lacks it
        raise GGUFError("reading GGUF files needs the gguf package: pip install gguf") from e
    path = Path(gguf_file)
    if not path.is_file():
        raise GGUFError(f"{path}: GGUF file not found")
    try:
        return GGUFReader(path)
    except (ValueError, OSError) as e:
        raise GGUFError(f"{path}: not a readable GGUF file ({e})") from e


def _field(reader, key: str, default: Any = None) -> Any:
    """A metadata value as Python data (str, int, list), `default` when the key is absent."""
    field = reader.fields.get(key)
    return default if field is None else field.contents()


def _enum_name(enum: Any, value: Any) -> str | None:
    try:
        return enum(value).name
    except (ValueError, TypeError):
        return None if value is None else str(value)


def token_check(gguf_file: str | Path, tokens: list[str],
                hf_ids: dict[str, int | None] | None = None) -> dict[str, dict[str, Any]]:
    """How a GGUF's vocabulary holds each of `tokens`.

    Args:
        gguf_file: the GGUF to read.
        tokens: token strings, e.g. the learned special tokens (`<sep>`).
        hf_ids: the ids the Hugging Face tokenizer gives them (`hf_token_ids`); adds `hf_id` and `matches_hf`.
    Returns:
        token -> {"single": bool (one vocabulary entry that llama.cpp matches verbatim in text), "id": int | None
        (its first entry), "type": "CONTROL" | "USER_DEFINED" | "NORMAL" | ... | None, "entries": int,
        "reason": why it is not single (absent when it is) [, "hf_id", "matches_hf"]}.
    """
    from gguf import TokenType

    reader = _reader(gguf_file)
    vocab: list[str] = _field(reader, "tokenizer.ggml.tokens", [])
    types: list[int] = _field(reader, "tokenizer.ggml.token_type", [])
    if not vocab:
        raise GGUFError(f"{gguf_file}: the GGUF has no vocabulary (tokenizer.ggml.tokens)")
    report: dict[str, dict[str, Any]] = {}
    for token in tokens:
        ids = [i for i, t in enumerate(vocab) if t == token]
        tid = ids[0] if ids else None
        kind = _enum_name(TokenType, types[tid]) if tid is not None and tid < len(types) else None
        entry: dict[str, Any] = {"single": len(ids) == 1 and kind in _VERBATIM, "id": tid, "type": kind,
                                 "entries": len(ids)}
        if not ids:
            entry["reason"] = "not in the vocabulary"
        elif len(ids) > 1:
            entry["reason"] = f"{len(ids)} vocabulary entries ({', '.join(map(str, ids))})"
        elif kind not in _VERBATIM:
            entry["reason"] = (f"a vocabulary entry of type {kind}, which the tokenizer may split "
                               f"(wanted {' or '.join(_VERBATIM)})")
        if hf_ids is not None:
            entry["hf_id"] = hf_ids.get(token)
            entry["matches_hf"] = tid is not None and tid == entry["hf_id"]
        report[token] = entry
    return report


def hf_token_ids(hf_dir: str | Path, tokens: list[str]) -> dict[str, int | None]:
    """The id the Hugging Face tokenizer in `hf_dir` encodes each token to, None where it is not one token."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(hf_dir))
    ids = {t: tok(t, add_special_tokens=False)["input_ids"] for t in tokens}
    return {t: i[0] if len(i) == 1 else None for t, i in ids.items()}


def require_single(gguf_file: str | Path, report: dict[str, dict[str, Any]]) -> None:
    """Raise a GGUFError naming each token of a `token_check` report that is not one token with the HF id."""
    bad = []
    for token, e in report.items():
        if not e["single"]:
            bad.append(f"{token!r} is {e['reason']}")
        elif "hf_id" in e and not e["matches_hf"]:
            hf = "no single id" if e["hf_id"] is None else f"id {e['hf_id']}"
            bad.append(f"{token!r} has id {e['id']} in the GGUF but {hf} in the Hugging Face tokenizer")
    if bad:
        raise GGUFError(f"{Path(gguf_file).name}: " + "; ".join(bad))


def check_tokens(gguf_file: str | Path, hf_dir: str | Path, tokens: list[str]) -> dict[str, dict[str, Any]]:
    """`token_check` against the HF tokenizer's ids; raises GGUFError unless every token is one token there
    with the same id. Returns the report."""
    report = token_check(gguf_file, tokens, hf_token_ids(hf_dir, tokens))
    require_single(gguf_file, report)
    return report


def describe(gguf_file: str | Path) -> dict[str, Any]:
    """A GGUF's headline facts: architecture, file type, tensor count, vocabulary size, eos id, chat template."""
    from gguf import LlamaFileType

    reader = _reader(gguf_file)
    return {"architecture": _field(reader, "general.architecture"),
            "file_type": _enum_name(LlamaFileType, _field(reader, "general.file_type")),
            "tensors": len(reader.tensors),
            "vocab": len(_field(reader, "tokenizer.ggml.tokens", [])),
            "eos_id": _field(reader, "tokenizer.ggml.eos_token_id"),
            "chat_template": "tokenizer.chat_template" in reader.fields,
            "bytes": Path(gguf_file).stat().st_size}

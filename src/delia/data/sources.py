"""Where data comes from: `builtin:NAME` (files shipped inside the package), a local path, or a Hugging Face
dataset id (`hf:owner/name[@split]`, or a bare `owner/name` that is not a local path; needs network).

Everything that reads a data file calls `resolve_source` first, so any of these works wherever a file is asked
for. Packaged files are stored gzip-compressed; the first use writes a plain copy under the delia cache
(`$DELIA_CACHE/data/<digest>/...`, atomically) so every reader, hash and error message sees an ordinary file.
Names and provenance of the packaged files: `delia ls data` and src/delia/resources/DATA_CARD.md.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tempfile
from importlib import resources
from pathlib import Path

BUILTIN = "builtin:"
HF = "hf:"
_SUFFIXES = (".jsonl.gz", ".txt", ".jsonl", ".json")


def cache_dir() -> Path:
    """Root of delia's cache: $DELIA_CACHE, else ~/.cache/delia."""
    return Path(os.environ.get("DELIA_CACHE") or Path.home() / ".cache" / "delia")


def _root():
    return resources.files("delia") / "resources" / "data"


def builtin_names() -> list[str]:
    """Every packaged data name, e.g. `halu/train`, `diverse/alpaca_5000`."""
    names = []
    for group in sorted(_root().iterdir(), key=lambda p: p.name):
        if not group.is_dir():
            continue
        for f in sorted(group.iterdir(), key=lambda p: p.name):
            for suf in _SUFFIXES:
                if f.name.endswith(suf):
                    names.append(f"{group.name}/{f.name[: -len(suf)]}")
                    break
    return names


def is_builtin(spec: str | Path) -> bool:
    return str(spec).startswith(BUILTIN)


def _builtin_file(name: str):
    """The packaged resource for `name` (with or without its file extension)."""
    stem = name
    for suf in (".gz", *_SUFFIXES):
        if stem.endswith(suf):
            stem = stem[: -len(suf)]
    group, _, base = stem.partition("/")
    if group and base:
        for suf in _SUFFIXES:
            res = _root() / group / f"{base}{suf}"
            if res.is_file():
                return res
    known = ", ".join(builtin_names())
    raise FileNotFoundError(f"{BUILTIN}{name}: no packaged data of that name (known: {known})")


def _atomic_write(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _materialise_builtin(name: str) -> Path:
    res = _builtin_file(name)
    raw = res.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()[:16]
    fname = res.name[:-3] if res.name.endswith(".gz") else res.name
    group = name.partition("/")[0]
    target = cache_dir() / "data" / digest / group / fname
    if not target.is_file():
        _atomic_write(target, gzip.decompress(raw) if res.name.endswith(".gz") else raw)
    return target


def _looks_like_hub_id(spec: str) -> bool:
    # `owner/name` with no file extension and nothing that marks it as a local path
    if spec.startswith((".", "/", "~")) or spec.count("/") != 1 or "\\" in spec:
        return False
    return not Path(spec).suffix


def _materialise_hub(spec: str) -> Path:
    ident, _, split = spec.partition("@")
    split = split or "train"
    target = cache_dir() / "data" / "hf" / hashlib.sha256(f"{ident}@{split}".encode()).hexdigest()[:16] / \
        f"{ident.replace('/', '__')}.{split}.jsonl"
    if target.is_file():
        return target
    try:
        import datasets

        ds = datasets.load_dataset(ident, split=split)
    except Exception as e:  # offline, unknown id, gated...: one clear message, never a traceback
        raise FileNotFoundError(f"{spec}: not a local file, and loading it as a Hugging Face dataset failed "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    lines = "".join(json.dumps(row, ensure_ascii=True) + "\n" for row in ds)
    _atomic_write(target, lines.encode())
    return target


def resolve_source(spec: str | Path) -> Path:
    """A readable local file for `spec`.

    Args:
        spec: `builtin:halu/train` (packaged), a local path, `hf:owner/name[@split]`, or a bare hub id
            `owner/name[@split]` that is not a local path.
    Returns:
        A local path (for packaged and hub data, a plain copy in the delia cache).
    Raises:
        FileNotFoundError: with a message naming `spec` and what was tried.
    """
    text = str(spec)
    if text.startswith(BUILTIN):
        return _materialise_builtin(text[len(BUILTIN):])
    if text.startswith(HF):
        return _materialise_hub(text[len(HF):])
    path = Path(text).expanduser()
    if path.exists():
        return path
    if _looks_like_hub_id(text):
        return _materialise_hub(text)
    raise FileNotFoundError(f"{text}: file not found")

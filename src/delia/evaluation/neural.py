"""Optional learned translation metrics (BLEURT, COMET) from local checkpoints, imported only when asked for.

Neither is installed by default and nothing is downloaded: the user points to a checkpoint on disk.
- BLEURT: a PyTorch conversion (e.g. BLEURT-20-D12) loaded with the `bleurt-pytorch` package.
- COMET: a `.ckpt` loaded with `unbabel-comet` (`pip install 'delia-tune[comet]'`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from delia.errors import UserError


class MetricUnavailable(UserError, RuntimeError):
    """An optional metric was requested but its package or checkpoint is missing."""


def _need(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    if not p.exists():
        raise MetricUnavailable(f"{what} checkpoint not found: {p}")
    return p


def bleurt_scores(hyps: Sequence[str], refs: Sequence[str], checkpoint: str, batch_size: int = 16) -> list[float]:
    """Sentence BLEURT scores with a local PyTorch BLEURT checkpoint."""
    path = _need(checkpoint, "BLEURT")
    try:
        import torch
        from bleurt_pytorch import BleurtForSequenceClassification, BleurtTokenizer
    except ImportError:
        raise MetricUnavailable("BLEURT needs the bleurt-pytorch package "
                                "(pip install git+https://github.com/lucadiliello/bleurt-pytorch)") from None
    model = BleurtForSequenceClassification.from_pretrained(path).eval()
    tok = BleurtTokenizer.from_pretrained(path)
    out: list[float] = []
    with torch.inference_mode():
        for i in range(0, len(hyps), batch_size):
            enc = tok(list(refs[i:i + batch_size]), list(hyps[i:i + batch_size]), padding="longest",
                      truncation=True, return_tensors="pt")
            out += model(**enc).logits.flatten().tolist()
    return out


def comet_scores(srcs: Sequence[str], hyps: Sequence[str], refs: Sequence[str], checkpoint: str,
                 batch_size: int = 16) -> list[float]:
    """Sentence COMET scores with a local checkpoint (CPU)."""
    path = _need(checkpoint, "COMET")
    try:
        from comet import load_from_checkpoint
    except ImportError:
        raise MetricUnavailable("COMET needs unbabel-comet: pip install 'delia-tune[comet]'") from None
    model = load_from_checkpoint(str(path))
    data = [{"src": s, "mt": h, "ref": r} for s, h, r in zip(srcs, hyps, refs)]
    return list(model.predict(data, batch_size=batch_size, gpus=0).scores)

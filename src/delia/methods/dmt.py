"""DMT (Dong et al., ACL 2024): stage 1 trains on the task rows; stage 2 continues the same adapter on general
data mixed with a fraction k of the task rows (baselines.md §5). General data = DELIA's self-sampled pool at the
same ratio, so DMT and DELIA differ only in staging."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from delia.methods.facts import read_rows, write_training_set
from delia.registry import registry

TRANSFORMS = registry("transform")  # run by the experiments' `transform` step


def stage2_rows(rows: list[dict[str, Any]], k: float, seed: int) -> list[dict[str, Any]]:
    """Every diverse row plus max(1, round(k x |D|)) task rows (a seeded choice), in the build's order.

    Args:
        rows: a built training set (rows carry `source`: downstream | diverse).
        k: the fraction of task rows mixed in (the DMT paper's best: 1/256).
        seed: seed of the choice.
    """
    down = [i for i, r in enumerate(rows) if r.get("source") == "downstream"]
    keep = set(random.Random(seed).sample(down, min(len(down), max(1, round(k * len(down))))))
    return [r for i, r in enumerate(rows) if r.get("source") != "downstream" or i in keep]


@TRANSFORMS.register("dmt_stage2", help="DMT stage 2: the diverse rows of a build plus k x |D| task rows")
def dmt_stage2(inputs: dict[str, Path], out: Path, k: float = 1 / 256, seed: int = 42) -> dict[str, Any]:
    rows = read_rows(inputs["data"] / "train.jsonl")
    manifest = json.loads((inputs["data"] / "manifest.json").read_text())
    kept = stage2_rows(rows, k, seed)
    counts = {"diverse": sum(r.get("source") == "diverse" for r in kept),
              "downstream": sum(r.get("source") == "downstream" for r in kept), "total": len(kept), "k": k}
    write_training_set(kept, out, {"special_tokens": manifest.get("special_tokens", []), "counts": counts,
                                   "seed": seed, "transform": "dmt_stage2"})
    return counts

"""SIGKILL of a real `delia experiment` process (original + cit on the tiny model) at four points, one after
another on one experiment directory: mid evaluation, mid training, a torn generation cache line, and a finished
step without its done.json. Each rerun of the same command resumes by itself; the last one ends with the
uninterrupted run's results.json metrics, predictions and adapter."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

import delia

KILL = Path(__file__).resolve().parents[1] / "killpoints.py"
TIMING = ("train.seconds", "test.examples_per_s")  # wall-clock measurements: the only metrics allowed to differ


def _config(path: Path, model: str, out: Path) -> Path:
    cfg = {"name": "kill", "model": model, "out": str(out), "threads": 1, "data": {"valid": None},
           "grid": {"methods": ["original", "cit"], "sizes": [4], "ratios": [1.0], "seeds": [42]},
           # 4 rows, batch 2: 4 optimizer steps, a sealed checkpoint every 2; dropout 0.05 (the default), so the
           # RNG state a resume restores matters
           "train": {"max_steps": 4, "batch_size": 2, "save_steps": 2, "learning_rate": 1e-2, "warmup_steps": 0,
                     "precision": "fp32", "report_to": ["none"]},
           # 2 test rows x (seen + unseen) = 4 prompts in 2 generation batches
           "eval": {"limit": 2, "dtype": "fp32", "bootstrap": 20, "generation": {"max_new_tokens": 8, "batch_size": 2},
                    "halu": {"instructions": "seen:1,unseen:1"}}}
    path.write_text(yaml.safe_dump(cfg))
    return path


def _experiment(point: str, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(Path(delia.__file__).parents[1]), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, str(KILL), point, "experiment", str(config), "--no-report"]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _results(root: Path) -> dict[str, dict]:
    return {r["run"]: r for r in json.loads((root / "results.json").read_text())}


def _scores(row: dict) -> str:
    """A run's metrics without timings, as JSON text (NaN compares equal to NaN there)."""
    return json.dumps({k: v for k, v in row["metrics"].items() if k not in TIMING}, sort_keys=True)


def _steps(root: Path, kind: str) -> list[Path]:
    return sorted((root / "steps" / kind).iterdir())


@pytest.mark.slow  # six `delia experiment` processes: ~60 s on 2 busy cores
def test_sigkill_at_four_points_then_rerun_gives_the_uninterrupted_results(tiny_chatty_dir, tmp_path):
    ref_root, root = tmp_path / "ref", tmp_path / "exp"
    ref = _experiment("none", _config(tmp_path / "ref.yaml", tiny_chatty_dir, ref_root))
    assert ref.returncode == 0, ref.stderr[-3000:]
    config = _config(tmp_path / "exp.yaml", tiny_chatty_dir, root)

    # 1. mid evaluation of the base model (the first eval step): one batch of 2 generations cached
    k = _experiment("gen-batch", config)
    assert k.returncode == -9, k.stderr[-2000:]
    (base_eval,) = _steps(root, "eval")
    assert len((base_eval / "generations.jsonl").read_text().splitlines()) == 2
    assert not (base_eval / "done.json").exists() and not (root / "results.json").exists()
    # 2. the rerun finishes that evaluation from its cache; training is killed right after optimizer step 3
    k = _experiment("step3", config)
    assert k.returncode == -9, k.stderr[-2000:]
    assert (base_eval / "done.json").exists()
    (train,) = _steps(root, "train")
    assert sorted(p.name for p in (train / "checkpoints").glob("checkpoint-*")) == ["checkpoint-2"]
    assert not (train / "delia_run.json").exists()
    # 3. training resumes from checkpoint-2 and finishes; the adapter's evaluation is killed halfway through
    # appending its first batch of generations (a torn last line)
    k = _experiment("torn-append", config)
    assert k.returncode == -9, k.stderr[-2000:]
    assert json.loads((train / "delia_run.json").read_text())["resumed_from"].endswith("checkpoint-2")
    (cit_eval,) = [d for d in _steps(root, "eval") if d != base_eval]
    assert not (cit_eval / "generations.jsonl").read_bytes().endswith(b"\n")
    # 4. the evaluation cuts the torn line and finishes; killed before the step's done.json is written
    k = _experiment("done-eval", config)
    assert k.returncode == -9, k.stderr[-2000:]
    assert (cit_eval / "metrics.json").exists() and not (cit_eval / "done.json").exists()

    rerun = _experiment("none", config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "Traceback" not in rerun.stderr
    # the same steps (hashes) in both directories, with the same outputs
    for kind in ("subset", "build", "train", "eval"):
        assert [d.name for d in _steps(root, kind)] == [d.name for d in _steps(ref_root, kind)], kind
    for d in _steps(root, "eval"):
        want = (ref_root / "steps" / "eval" / d.name / "predictions.jsonl").read_bytes()
        assert (d / "predictions.jsonl").read_bytes() == want, d.name
    want_w = load_file(str(ref_root / "steps" / "train" / train.name / "adapter_model.safetensors"))
    got_w = load_file(str(train / "adapter_model.safetensors"))
    assert got_w.keys() == want_w.keys() and all(torch.equal(got_w[n], want_w[n]) for n in want_w)
    want, got = _results(ref_root), _results(root)
    assert sorted(got) == sorted(want) == ["cit/seed42-size4", "original/base"]
    for run in want:
        assert _scores(got[run]) == _scores(want[run]), run
    assert got["cit/seed42-size4"]["metrics"]["train.steps"] == 4

"""`delia train` under `accelerate launch` with two CPU processes (DDP over gloo), and on the GGUF base."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import write_rows

ROOT = Path(__file__).resolve().parents[2]


def test_two_cpu_processes_train_a_saved_adapter(tiny_dir, tmp_path):
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent))
    delia = shutil.which("delia", path=str(Path(sys.executable).parent))
    if not accelerate or not delia:
        pytest.skip("accelerate/delia console scripts not installed in this environment")
    data, out = write_rows(tmp_path / "train.jsonl"), tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [accelerate, "launch", "--config_file", str(ROOT / "configs/accelerate/cpu_ddp.yaml"), delia, "train",
           "--data", str(data), "--out", str(out), "--model", tiny_dir, "--max-steps", "2",
           "batch_size=4", "micro_batch_size=1", "max_length=96", "report_to=[none]", "warmup_steps=0"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "delia_run.json").read_text())
    assert meta["batch"]["processes"] == 2 and meta["batch"]["accum"] == 2 and meta["global_step"] == 2
    # the recorded autocast is the one accelerate ran (precision auto: bf16 only on a CPU with native bf16)
    assert meta["dtype"] == {"weights": "fp32", "autocast": "bf16" if meta["precision"] == "bf16-autocast" else None}
    from delia.training import load_trained

    model, tok = load_trained(out)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


@pytest.mark.slow
def test_gguf_base_trains_and_reloads_identically(tmp_path):
    """The embedded model comes from GGUF: train one step, reload onto a fresh base, same logits."""
    from transformers import TrainerCallback

    from delia.models import DEFAULT_MODEL, resolve_model
    from delia.training import TrainConfig, load_trained, run_train

    try:
        resolve_model(DEFAULT_MODEL)
    except FileNotFoundError as e:
        pytest.skip(str(e))

    class Capture(TrainerCallback):
        model = None

        def on_train_end(self, args, state, control, model=None, **kwargs):
            Capture.model = model

    data = write_rows(tmp_path / "train.jsonl", n=4)
    cfg = TrainConfig(data=str(data), out=str(tmp_path / "run"), model=DEFAULT_MODEL, batch_size=4,
                      micro_batch_size=2, max_steps=1, warmup_steps=0, max_length=64, report_to=["none"])
    run_train(cfg, callbacks=[Capture()])
    meta = json.loads((tmp_path / "run" / "delia_run.json").read_text())
    assert meta["base_source"] == "gguf" and meta["tied"] is True
    model, tok = load_trained(tmp_path / "run")
    ids = torch.tensor([tok("Answer in <sep>: 2+2?")["input_ids"]])
    trained = Capture.model.eval()
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, trained(input_ids=ids).logits)

"""Training throughput: `delia train` vs a plain TRL SFTTrainer with library defaults, in one run.

Both train LoRA r=16 on q/k/v/o of the embedded SmolLM2-135M on the same rows of the halu task (the paper's
downstream data), the same rows per optimizer step and the same number of steps. The plain run keeps TRL's
defaults for the hardware (bf16 where the CPU has it natively, else float32; gradient checkpointing on; random
padded batches of 8); delia runs its own path (its token-row training included). Both use the same torch
threads (default 1). Throughput is non-pad tokens per second over the steps after the first. MFU is reported
against fp32 and bf16 matmul peaks measured here (benchmarks/common.py) and against the machine's best dtype.

    flock /tmp/delia-cpu.lock python benchmarks/training.py --quick        # < 3 min
    flock /tmp/delia-cpu.lock python benchmarks/training.py [--rows 24 --steps 3 --rows-per-step 8]

`--no-native-bf16` runs the same on a CPU with native bf16 made to behave like one without it (an AVX-512 CPU
without BF16, emulated: benchmarks/common.py NO_NATIVE_BF16_ENV): the plain run's "defaults for this hardware"
and delia's `precision: auto` are then fp32, MFU is against the fp32 peak, and the header says that the run is
emulated and whether bf16 matmuls did slow down:

    flock /tmp/delia-cpu.lock python benchmarks/training.py --quick --no-native-bf16
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

from common import (  # benchmarks/common.py (this script's folder)
    add_no_native_bf16,
    cpu_header,
    emulate_no_native_bf16,
    forward_flops_per_token,
    matmul_peak,
)


def train_flops_per_token(config, seq_len: float) -> float:
    """LoRA training FLOPs per token: forward + the backward to the activations (frozen weights get no
    weight gradient, so 2x forward, not the 3x of full fine-tuning). Forward = 2 x (block matmul params +
    LM head) + attention scores/values 4 x layers x seq x hidden. Recomputation is not counted (MFU)."""
    return 2 * forward_flops_per_token(config, seq_len)


def tokens_per_s(log_path: Path) -> tuple[float, int]:
    """(non-pad tokens/s over logged steps after the first, tokens counted) from a TrainLog JSON."""
    entries = [e for e in json.loads(log_path.read_text()) if "num_tokens" in e and "loss" in e]
    first, last = entries[0], entries[-1]
    return (last["num_tokens"] - first["num_tokens"]) / (last["time"] - first["time"]), int(last["num_tokens"])


def plain_run(data: Path, out: Path, model_name: str, steps: int, rows_per_step: int, max_length: int) -> Path:
    """TRL SFTTrainer with its defaults for this hardware: bf16 (TRL's default) where the CPU has it natively,
    else float32 (emulated bf16 is several times slower); gradient checkpointing on (TRL's default)."""
    from datasets import Dataset
    from peft import LoraConfig
    from trl import SFTConfig, SFTTrainer

    from delia.models import load_model, load_tokenizer
    from delia.training.progress import TrainLog

    rows = [json.loads(line) for line in data.read_text().splitlines()]
    ds = Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])
    from delia.models import cpu_supports_bf16

    tok, model = load_tokenizer(model_name), load_model(model_name, dtype="fp32")
    args = SFTConfig(output_dir=str(out), max_steps=steps, bf16=cpu_supports_bf16(), use_cpu=True, logging_steps=1,
                     per_device_train_batch_size=min(8, rows_per_step),
                     gradient_accumulation_steps=max(1, rows_per_step // 8),
                     max_length=max_length, report_to=[], save_strategy="no")
    log = out / "plain_log.json"
    trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                         peft_config=LoraConfig(r=16, lora_alpha=16, lora_dropout=0.05,
                                                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                                task_type="CAUSAL_LM"),
                         callbacks=[TrainLog(log)])
    trainer.callback_handler.callbacks.insert(0, trainer.callback_handler.pop_callback(TrainLog))
    trainer.train()
    return log


def delia_run(data: Path, out: Path, model_name: str, steps: int, rows_per_step: int, max_length: int,
              precision: str = "auto") -> tuple[Path, dict]:
    from delia.training import TrainConfig, run_train

    cfg = TrainConfig(data=str(data), out=str(out), model=model_name, max_steps=steps, batch_size=rows_per_step,
                      max_length=max_length, report_to=["none"], precision=precision, save_steps=10_000,
                      threads=torch.get_num_threads())  # the same threads as the plain run
    run_train(cfg)
    return out / "train_log.json", json.loads((out / "delia_run.json").read_text())


def step_time(model_name: str, data: Path, max_length: int, bf16: bool, reps: int = 2) -> float:
    """Seconds per LoRA forward+backward on 4 rows, fp32 or under bf16 autocast (median of reps)."""
    from peft import LoraConfig, get_peft_model

    from delia.data import read_records
    from delia.models import load_model, load_tokenizer
    from delia.training.data import prepare_rows

    tok, model = load_tokenizer(model_name), load_model(model_name, dtype="fp32")
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj",
                                                                                     "o_proj"]))
    rows = prepare_rows(read_records(data)[:4], tok, max_length).rows
    n = min(len(r["input_ids"]) for r in rows)
    ids = torch.tensor([r["input_ids"][:n] for r in rows])
    times = []
    for _ in range(reps + 1):
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        times.append(time.perf_counter() - t)
    return sorted(times[1:])[len(times[1:]) // 2]


def main() -> None:
    from delia.data.sources import resolve_source
    from delia.models import DEFAULT_MODEL, cpu_supports_bf16, ensure_local
    from delia.training.data import padding_fraction

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=24)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--rows-per-step", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both runs (0: torch's default)")
    ap.add_argument("--quick", action="store_true", help="16 rows, 3 steps of 4 rows, no fp32/bf16 step timing "
                                                         "(< 3 min on 2 cores)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    add_no_native_bf16(ap)
    a = ap.parse_args()
    if a.no_native_bf16:
        emulate_no_native_bf16()  # restarts this process with the settings in place
    if a.quick:
        a.rows, a.steps, a.rows_per_step = 16, 3, 4
    if a.threads:
        torch.set_num_threads(a.threads)
    ensure_local(a.model)  # convert the GGUF once, outside the timings

    work = Path(tempfile.mkdtemp(prefix="delia-bench-train-"))
    data = work / "train.jsonl"
    halu = resolve_source("builtin:halu/train")
    data.write_text("".join(halu.read_text().splitlines(keepends=True)[:a.rows]))
    load_before = os.getloadavg()[0]
    peak32, peak16 = matmul_peak(torch.float32), matmul_peak(torch.bfloat16)
    best_peak = peak16 if cpu_supports_bf16() else peak32  # the machine's best dtype

    plain_log = plain_run(data, work / "plain", a.model, a.steps, a.rows_per_step, a.max_length)
    delia_log, meta = delia_run(data, work / "delia", a.model, a.steps, a.rows_per_step, a.max_length)
    plain_tps, plain_tokens = tokens_per_s(plain_log)
    delia_tps, delia_tokens = tokens_per_s(delia_log)
    t32 = t16 = float("nan")
    if not a.quick:
        t32 = step_time(a.model, data, a.max_length, bf16=False)
        t16 = step_time(a.model, data, a.max_length, bf16=True)

    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(ensure_local(a.model))
    seq = (meta["data"]["prompt_tokens"] + meta["data"]["completion_tokens"]) / meta["data"]["rows"]
    fpt = train_flops_per_token(config, seq)
    # padding of the plain run's random batches of 8, estimated on the same lengths
    lengths = [len(r) for r in _lengths(data, a.model, a.max_length)]
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(42)).tolist()
    plain_pad = padding_fraction(lengths, [order[i:i + 8] for i in range(0, len(order), 8)])

    res = {
        "rows": a.rows, "steps": a.steps, "rows_per_step": a.rows_per_step, "max_length": a.max_length,
        "mean_tokens_per_row": round(seq, 1), "cpu_native_bf16": cpu_supports_bf16(),
        "peak_gflops_fp32": round(peak32, 1), "peak_gflops_bf16": round(peak16, 1),
        "plain_tokens_per_s": round(plain_tps, 1), "delia_tokens_per_s": round(delia_tps, 1),
        "speedup": round(delia_tps / plain_tps, 2),
        "delia_precision": meta["precision"], "delia_padding_fraction": meta["batch"]["expected_padding_fraction"],
        "plain_padding_fraction_est": round(plain_pad, 4),
        "train_gflop_per_token": round(fpt / 1e9, 3),
        "delia_mfu_vs_fp32_peak": round(delia_tps * fpt / 1e9 / peak32, 3),
        "delia_mfu_vs_bf16_peak": round(delia_tps * fpt / 1e9 / peak16, 3),
        "plain_mfu_vs_fp32_peak": round(plain_tps * fpt / 1e9 / peak32, 3),
        "plain_mfu_vs_best_peak": round(plain_tps * fpt / 1e9 / best_peak, 3),
        "delia_mfu_vs_best_peak": round(delia_tps * fpt / 1e9 / best_peak, 3), "threads": torch.get_num_threads(),
        "load_avg_before": round(load_before, 2), "load_avg_after": round(os.getloadavg()[0], 2),
        "step_s_fp32": round(t32, 2), "step_s_bf16_autocast": round(t16, 2), "bf16_speedup": round(t32 / t16, 2),
    }
    header, cpu_info = cpu_header(peak32, peak16, a.no_native_bf16,
                                  torch.bfloat16 if cpu_supports_bf16() else torch.float32)
    res.update(cpu_info)
    print("\n".join(header))
    print(f"{'':28}{'plain TRL':>12}{'delia':>12}")
    print(f"{'tokens/s (non-pad)':28}{plain_tps:12.1f}{delia_tps:12.1f}   ratio {delia_tps / plain_tps:.2f}x")
    print(f"{'padding fraction':28}{plain_pad:12.3f}{meta['batch']['expected_padding_fraction']:12.3f}")
    print(f"{'MFU vs fp32 peak':28}{res['plain_mfu_vs_fp32_peak']:12.1%}{res['delia_mfu_vs_fp32_peak']:12.1%}"
          f"   (peak {peak32:.0f} GFLOP/s)")
    print(f"{'MFU vs bf16 peak':28}{plain_tps * fpt / 1e9 / peak16:12.1%}{res['delia_mfu_vs_bf16_peak']:12.1%}"
          f"   (peak {peak16:.0f} GFLOP/s, native bf16: {cpu_supports_bf16()}; plain TRL bf16: {cpu_supports_bf16()})")
    print(f"{'MFU vs best-dtype peak':28}{res['plain_mfu_vs_best_peak']:12.1%}{res['delia_mfu_vs_best_peak']:12.1%}"
          f"   (peak {best_peak:.0f} GFLOP/s, {'bf16' if cpu_supports_bf16() else 'fp32'}; torch threads "
          f"{torch.get_num_threads()})")
    print(f"LoRA step on 4 rows: fp32 {t32:.2f}s, bf16 autocast {t16:.2f}s ({t32 / t16:.2f}x); "
          f"delia chose {meta['precision']}")
    print(f"1-min load average: {load_before:.1f} before, {res['load_avg_after']:.1f} after (2 cores; >2 = contended)")
    print(json.dumps(res))
    if a.json:
        a.json.write_text(json.dumps(res, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


def _lengths(data: Path, model: str, max_length: int) -> list[list[int]]:
    from delia.data import read_records
    from delia.models import load_tokenizer
    from delia.training.data import prepare_rows

    return [r["input_ids"] for r in prepare_rows(read_records(data), load_tokenizer(model), max_length).rows]


if __name__ == "__main__":
    main()

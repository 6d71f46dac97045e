"""The reliability probes of issue 13 as a table: each row runs the tests that assert it and reports how many pass.

The claims in the "what is checked" column are exactly what those tests assert (kill points, corpus sizes,
byte checks); the "result" column is measured on this run. About 4 minutes on 2 CPU cores.

    OMP_NUM_THREADS=1 python benchmarks/reliability.py            # prints a markdown table
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _sizes() -> dict[str, int]:
    from tests.data.malformed import BY_USE, UNIVERSAL
    from tests.test_bad_configs import BUILD, EVAL, EXPERIMENT, SAMPLE, TRAIN

    return {"files": len(UNIVERSAL), "by_use": len(BY_USE),
            "configs": len(TRAIN + EVAL + SAMPLE + BUILD + EXPERIMENT)}


def probes(n: dict[str, int]) -> list[tuple[str, str, list[str]]]:
    """(probe, what the tests check, pytest node-id prefixes)."""
    ck, tl = "tests/training/test_checkpoints.py", "tests/test_output_locations.py"
    return [
        ("SIGKILL during `delia train`",
         "killed at 4 points (between checkpoints; mid-save with a half-written optimizer.pt; saved but unsealed; "
         "while writing the final artifacts): every rerun finishes by itself, adapter bit-identical to an "
         "uninterrupted run, same train_loss; a crafted half-written checkpoint is skipped with a warning",
         [f"{ck}::test_sigkill", f"{ck}::test_resume_falls_back", f"{ck}::test_pick", f"{ck}::test_seal",
          f"{ck}::test_unsealed"]),
        ("SIGKILL during `delia eval`",
         "killed at 4 points in turn on one output (after the first generation batch; mid-append, a torn line; "
         "metrics.json written but not renamed; before the plots and summary): each rerun of the same command "
         "finishes by itself past the dead process's lock; predictions.jsonl byte-identical and metrics.json equal "
         "to an uninterrupted run (greedy); no row generated twice; the dead run's temporary file swept",
         ["tests/evaluation/test_kill.py", "tests/test_files.py"]),
        ("SIGKILL during `delia experiment` (original + cit, tiny model)",
         "killed at 4 points in turn (mid base-model eval; after optimizer step 3 of training; a torn generation "
         "line in the adapter's eval; a finished step without its done.json): the rerun completes; same step "
         "hashes, byte-identical predictions, bit-identical adapter, results.json metrics equal but for timings",
         ["tests/experiments/test_kill.py"]),
        ("Ctrl-C / SIGTERM on `delia sample --engine openai`",
         "flaky loopback server (429, 500, 503, a read timeout), SIGINT and SIGTERM: no request after the signal, "
         "every answer received is in the cache, one summary line, exit 130; the rerun asks each remaining query once",
         ["tests/sampling/test_interrupt.py"]),
        ("interrupt inside `delia experiment`",
         "exit 130 naming the running step; finished steps untouched by the rerun, which completes",
         ["tests/experiments/test_cli.py::test_an_interrupt", "tests/experiments/test_runner.py::test_an_interrupted"]),
        (f"bad input: {n['files']} malformed files x 7 command paths, + {n['by_use']} use-specific files",
         "validate, stats, build (downstream and diverse), train, eval, sample: exit 2, FILE:LINE and the reason, no "
         "traceback, nothing written; `validate --for USE` rejects exactly what the command rejects; 3 as real "
         "processes",
         ["tests/test_bad_inputs.py"]),
        ("writer/reader mismatch (U+2028 / U+2029 / U+0085)",
         "every writer escapes them; readers split at \\n only; `build` output reads back in `train` row for row",
         ["tests/data/test_jsonl.py"]),
        (f"bad configs: {n['configs']} cases over train, eval, sample, build, experiment",
         "exit 2, the message, no traceback, no output, and no model loaded (loaders replaced by a bomb); "
         "`1e-3` in YAML accepted",
         ["tests/test_bad_configs.py"]),
        ("read-only output location", "build, sample, train, eval on a read-only tmpfs: exit 2, one line",
         [f"{tl}::test_read_only", f"{tl}::test_output_under"]),
        ("disk full", "build, sample, train, eval on a tiny tmpfs: exit 2, one line, no temp file, no torn line, no "
                      "unsealed checkpoint; the sample cache rolls back a failed batch",
         [f"{tl}::test_full_disk", "tests/sampling/test_cache.py::test_disk_full"]),
        ("huge prompt (past the model's context)",
         "sample and eval: FILE:LINE before anything is written, or `long_prompts: truncate` cuts the middle",
         ["tests/test_lengths.py"]),
        ("concurrency", "a second train / eval / sample on one output fails at once (exit 2 via LockError)",
         [f"{ck}::test_second_trainer", "tests/evaluation/test_reliability.py::test_a_second_eval",
          "tests/sampling/test_cache.py::test_a_second_writer"]),
        ("eval cache torn last line", "cut on the next run; only that row is generated again; nothing fused",
         ["tests/evaluation/test_reliability.py::test_torn", "tests/evaluation/test_reliability.py::test_bad_input"]),
        ("resume bookkeeping", "train_loss after a resume covers all steps (equal to the uninterrupted run's)",
         [f"{ck}::test_total_train_loss"]),
    ]


def main() -> None:
    table = probes(_sizes())
    files = sorted({p.split("::")[0] for _, _, ids in table for p in ids})
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "pytest", *files, "-q", "-rA", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True)
    outcome = {node: status for status, node in
               re.findall(r"^(PASSED|FAILED|ERROR) (\S+)", proc.stdout, re.M)}
    print("| probe | what is checked | result | tests |\n|---|---|---|---|")
    for probe, what, ids in table:
        got = [v for k, v in outcome.items() if any(k.startswith(i) for i in ids)]
        ok = got.count("PASSED")
        verdict = "**pass**" if got and ok == len(got) else f"**{len(got) - ok} not passing**" if got else "no tests"
        names = ", ".join(sorted({i.split("::")[0].removeprefix("tests/") for i in ids}))
        print(f"| {probe} | {what} | {verdict} ({ok}/{len(got)} tests) | {names} |")
    print(f"\n{sum(v == 'PASSED' for v in outcome.values())}/{len(outcome)} tests passed in "
          f"{time.perf_counter() - t0:.0f} s (`python benchmarks/reliability.py`)")
    if proc.returncode not in (0, 5):
        print(proc.stdout[-3000:], file=sys.stderr)


if __name__ == "__main__":
    main()

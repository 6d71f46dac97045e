"""Run `delia ARGS` and SIGKILL the process at one named point of `delia eval` or `delia experiment` (a test
helper, run as a script; `tests/training/killpoint.py` does the same for `delia train`).

    python killpoints.py POINT eval --data ... --out ...
    python killpoints.py POINT experiment CONFIG.yaml

Each point kills at its first occurrence in the process, so a point is reached at the same place on every run
(no sleeps, no timing). Points:
    gen-batch    right after the first batch of generations is appended (and fsynced) to a generations.jsonl
    torn-append  while a batch of generations is appended: half of its bytes written, no newline
    predictions  predictions.jsonl written and fsynced to its temporary file, not yet renamed over the target
    metrics      metrics.json written and fsynced to its temporary file, not yet renamed over the target
    summary      metrics.json in place, summary.md and the plots not yet written
    done-KIND    experiment: a step of KIND (train, eval) finished, its done.json not yet written
    step3        training: right after optimizer step 3 (tests/training/killpoint.py)
    none         no kill (the reference run, and the reruns)
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    from delia.data.jsonl import AppendLog, dumps_line

    if point == "gen-batch":
        orig_append = AppendLog.append

        def append(self, rows):
            orig_append(self, rows)
            if self.path.name == "generations.jsonl" and rows:
                _die()

        AppendLog.append = append
    elif point == "torn-append":
        def append(self, rows):
            if self.path.name == "generations.jsonl" and rows:
                data = "".join(dumps_line(r) + "\n" for r in rows).encode("utf-8")
                os.write(self._fd, data[: len(data) // 2])
                os.fsync(self._fd)
                _die()

        AppendLog.append = append
    elif point in ("predictions", "metrics"):
        target = f"{point}.json" if point == "metrics" else "predictions.jsonl"
        orig_replace = os.replace

        def replace(src, dst, *a, **kw):
            if Path(dst).name == target:  # the temporary file is complete and fsynced: only the rename is left
                _die()
            return orig_replace(src, dst, *a, **kw)

        os.replace = replace
    elif point == "summary":
        from delia.evaluation import report

        report.write_plots = lambda *a, **kw: _die()
    elif point.startswith("done-"):
        from delia.experiments import runner

        orig_write = runner.write_text_atomic
        kind = point.split("-", 1)[1]

        def write_text_atomic(path, text):
            if Path(path).name == runner.DONE and Path(path).parent.parent.name == kind:
                _die()
            orig_write(path, text)

        runner.write_text_atomic = write_text_atomic
    elif point == "step3":
        sys.path.insert(0, str(Path(__file__).resolve().parent / "training"))
        from killpoint import install as install_train

        install_train(point)
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from delia.cli import main

    sys.argv = ["delia", *sys.argv[2:]]
    main()

"""Run `delia train ARGS` and SIGKILL the process at one named point (a test helper, run as a script).

    python killpoint.py POINT train --data ... --out ...

Points (the tiny runs save a checkpoint every 2 steps and stop at step 4):
    step3       right after optimizer step 3 (checkpoint-2 complete, nothing of checkpoint-4 yet)
    mid-save    while checkpoint-4 is written: adapter saved, optimizer.pt half written
    before-seal checkpoint-4 fully written by the Trainer but not yet sealed
    final       after training, while the final artifacts are written (adapter saved, delia_run.json not)
    none        no kill (the reference run)
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
    import transformers

    from delia.training import checkpoints, train

    if point == "step3":
        orig_step = checkpoints.CheckpointSeal.on_step_end

        def on_step_end(self, args, state, control, **kw):
            out = orig_step(self, args, state, control, **kw)
            if state.global_step == 3:
                _die()
            return out

        checkpoints.CheckpointSeal.on_step_end = on_step_end
    elif point == "mid-save":
        orig_save = transformers.Trainer._save_optimizer_and_scheduler

        def save_opt(self, output_dir):
            orig_save(self, output_dir)
            if self.state.global_step == 4:
                opt = Path(output_dir) / "optimizer.pt"
                opt.write_bytes(opt.read_bytes()[: opt.stat().st_size // 2])
                _die()

        transformers.Trainer._save_optimizer_and_scheduler = save_opt
    elif point == "before-seal":
        orig_seal = checkpoints.seal

        def seal(ckpt, step):
            if step == 4:
                _die()
            orig_seal(ckpt, step)

        checkpoints.seal = seal
    elif point == "final":
        orig_write = train.write_json

        def write_json(path, data):
            if Path(path).name == train.RUN_FILE:
                _die()
            orig_write(path, data)

        train.write_json = write_json
    elif point != "none":
        raise SystemExit(f"unknown kill point {point!r}")


if __name__ == "__main__":
    install(sys.argv[1])
    from delia.cli import main

    sys.argv = ["delia", *sys.argv[2:]]
    main()

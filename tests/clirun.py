"""Run the `delia` console entry point in this process: exit code and output, as a shell would see them."""

from __future__ import annotations

import contextlib
import io
import sys

from delia.cli import main


def run_cli(args: list[str]) -> tuple[int, str]:
    """(exit code, stdout + stderr) of `delia ARGS`; any exception other than an exit propagates (= traceback)."""
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["delia", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main()
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
    return code, out.getvalue() + err.getvalue()

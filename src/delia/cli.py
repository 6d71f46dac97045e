"""The `delia` command line. Each subcommand parses options, loads a config and calls one function.

Stage packages add their own subcommands: each module listed in `COMMAND_MODULES` defines
`register(app: typer.Typer)`. Keep imports of torch/transformers inside command bodies so that
`delia --help` stays fast.
"""

from __future__ import annotations

import errno
import importlib
import json
import logging
import signal
import sys
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(help="delia: diversity-enhanced instruction tuning (DELIA) for small task data.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Validate and inspect example files.", no_args_is_help=True)
app.add_typer(data_app, name="data")
console = Console(stderr=True)

# Stage modules that add subcommands; a module is listed here only once its commands work.
COMMAND_MODULES: list[str] = [
    "delia.sampling.cli",
    "delia.diversify.cli",
    "delia.mixing.cli",
    "delia.training.cli",
    "delia.evaluation.cli",
    "delia.experiments.cli",
    "delia.export.cli",
]


@app.callback()
def _root(verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at INFO level.")) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@data_app.command("validate")
def data_validate(
    file: Path = typer.Argument(..., help="JSONL (or JSON array) file of examples."),
    fmt: str = typer.Option("auto", "--format", help="Format name (see `delia ls formats`), or auto."),
    use: str = typer.Option(None, "--for", help="Also require what one command needs: train, build, cache, "
                                                "sample, eval-halu, eval-translation, eval-json, eval-label, "
                                                "eval-text."),
) -> None:
    """Check every row; print `FILE:LINE: field: reason` per problem and exit 2 when any. Without --for, also
    say which commands would accept the file (each check is the command's own input function)."""
    from delia.data import validate_file
    from delia.inputs import OWN_READER, USES, check_use

    if use is not None and use not in USES:
        raise typer.BadParameter(f"{use!r} is not one of {', '.join(USES)}", param_hint="--for")
    problems = validate_file(file, fmt) if use not in OWN_READER else []
    if not problems and use:
        problems = check_use(file, use)
    for p in problems:
        typer.echo(str(p))
    if problems:
        console.print(f"[red]{len(problems)} problem(s) in {file}" + (f" for {use}" if use else "") + "[/red]",
                      soft_wrap=True, markup=True, highlight=False)
        raise typer.Exit(2)
    if use:
        console.print(f"[green]{file}: valid for {use}[/green]", soft_wrap=True, highlight=False)
        return
    console.print(f"[green]{file}: valid[/green]", soft_wrap=True, highlight=False)
    if fmt == "auto":  # the commands read with automatic format detection
        for name, (what, _) in USES.items():
            found = check_use(file, name)
            verdict = "yes" if not found else f"no: {found[0]}" + (f" (+{len(found) - 1} more)" if len(found) > 1
                                                                   else "")
            typer.echo(f"  as {what}: {verdict}")


@data_app.command("stats")
def data_stats_cmd(
    file: Path = typer.Argument(..., help="JSONL (or JSON array) file of examples."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model whose tokenizer counts tokens."),
    fmt: str = typer.Option("auto", "--format", help="Format name, or auto."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Rows, roles and token-length percentiles (p50/p90/p99/max) with the model's tokenizer."""
    from delia.data import data_stats, read_records
    from delia.models import load_tokenizer

    stats = data_stats(read_records(file, fmt), load_tokenizer(model))
    if as_json:
        typer.echo(json.dumps(stats, indent=2))
        return
    out = Console()
    out.print(f"[bold]{file}[/bold]: {stats['rows']} rows, formats {stats['formats']}, roles {stats['roles']}, "
              f"{stats['with_response']} with a response, {stats['tokens_total']} chat tokens in all")
    table = Table("tokens", "mean", "p50", "p90", "p99", "max")
    for name, p in stats["tokens"].items():
        table.add_row(name, f"{p['mean']:.1f}", *(f"{p[k]:.0f}" for k in ("p50", "p90", "p99", "max")))
    out.print(table)


@app.command("chat")
def chat_cmd(
    prompt: str = typer.Argument(..., help="User message."),
    model: str = typer.Option("smollm2-135m-instruct", help="Model name or path."),
    max_new_tokens: int = typer.Option(128, help="Generation budget."),
    dtype: str = typer.Option("auto", help="auto | bf16 | fp32."),
) -> None:
    """Answer one chat message greedily (a smoke check of a model)."""
    from delia.models import chat, load

    t0 = time.perf_counter()
    m, tok = load(model, dtype=dtype)
    t1 = time.perf_counter()
    reply = chat(m, tok, [{"role": "user", "content": prompt}], max_new_tokens=max_new_tokens)
    t2 = time.perf_counter()
    typer.echo(reply)
    console.print(f"[dim]load {t1 - t0:.1f}s ({m.dtype}), generate {t2 - t1:.1f}s[/dim]")


@app.command("ls")
def ls_cmd(kind: str = typer.Argument(None, help="Registry to list (default: all).")) -> None:
    """List registered parts (formats, engines, diversifiers, methods, metrics) and packaged data."""
    from delia.data.sources import BUILTIN, builtin_names
    from delia.registry import REGISTRIES

    _load_registries()
    kinds = [k for k in REGISTRIES if kind is None or kind.rstrip("s") in k]
    if kind is None or kind == "data":
        table = Table(title="data (packaged; provenance: delia/resources/DATA_CARD.md)", show_header=False,
                      title_justify="left")
        for name in builtin_names():
            table.add_row(f"{BUILTIN}{name}")
        Console().print(table)
        from delia.experiments.usertask import builtin_tasks

        tasks = Table(title="tasks (packaged)", show_header=False, title_justify="left")
        for name in builtin_tasks():
            tasks.add_row(f"{BUILTIN}{name}")
        Console().print(tasks)
        if kind == "data":
            return
    if not kinds:
        console.print(f"[red]no registry {kind!r}; known: {', '.join(REGISTRIES)}[/red]")
        raise typer.Exit(2)
    out = Console()
    for k in kinds:
        table = Table(title=k, show_header=False, title_justify="left")
        for name, help_ in REGISTRIES[k].describe():
            table.add_row(name, help_)
        out.print(table)


# Modules whose import fills a registry; extended by stage packages.
REGISTRY_MODULES: list[str] = [
    "delia.data.formats",
    "delia.sampling.engines",
    "delia.diversify.stage",
    "delia.evaluation.metrics",
    "delia.methods",
    "delia.task",
]


def _load_registries() -> None:
    for mod in REGISTRY_MODULES:
        importlib.import_module(mod)


for _mod in COMMAND_MODULES:
    importlib.import_module(_mod).register(app)


def os_error_message(e: OSError) -> str:
    """One line for a failed read or write: the path, the system's reason, and what to do when it is clear."""
    hint = {errno.ENOSPC: " (the disk is full: free space and rerun; finished work is kept)",
            errno.EACCES: " (no permission: choose a writable location)",
            errno.EROFS: " (read-only file system: choose a writable location)",
            errno.EISDIR: " (a directory, where a file was expected)",
            errno.ENOTDIR: " (a path component is a file, not a directory)"}.get(e.errno, "")
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e}{hint}"


def _terminate(signum: int, frame: object) -> None:
    # SIGTERM (a scheduler, `kill`, `timeout`) takes the same clean path as Ctrl-C: work already finished is
    # kept, the running stage says how to resume.
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def main() -> None:
    """Console entry point: run the app; expected errors print one line instead of a traceback (exit 2)."""
    from rich.markup import escape

    from delia.errors import USER_ERRORS

    signal.signal(signal.SIGTERM, _terminate)
    try:
        app()
    except USER_ERRORS as e:
        text = os_error_message(e) if isinstance(e, OSError) and e.errno else str(e)
        console.print(f"[red]error:[/red] {escape(text)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except OSError as e:  # unreadable input, unwritable / full / missing output location
        console.print(f"[red]error:[/red] {escape(os_error_message(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":  # `python -m delia.cli` used to exit 0 doing nothing
    main()

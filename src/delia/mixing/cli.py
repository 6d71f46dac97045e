"""`delia build`: parse options, load a BuildConfig, call `build`, print a summary."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer


def cli_config(cls: type, config: Path | None, overrides: list[str] | None, given: dict[str, Any]):
    """Config from YAML, then the options given on the command line, then `key=value` overrides (last wins)."""
    from delia.config import flag_overrides, load_config

    # the given options go in as (JSON-quoted) overrides of the file, `key=value` overrides last
    return load_config(cls, config, flag_overrides(given) + list(overrides or []))


def register(app: typer.Typer) -> None:
    @app.command("build")
    def build_cmd(
        downstream: str = typer.Option(None, "--downstream", "-d", help="Downstream examples (JSONL)."),
        diverse: str = typer.Option(None, "--diverse", help="Diverse cache from `delia sample`."),
        ratio: float = typer.Option(None, "--ratio", "-r", help="Diverse rows per downstream row (R)."),
        seed: int = typer.Option(None, "--seed", help="Seed (default 42)."),
        out: str = typer.Option(None, "--out", "-o", help="Output directory."),
        schedule: str = typer.Option(None, "--schedule", help="shuffle (default) or interleave."),
        instructions: str = typer.Option(None, "--instructions", help="Instruction variants file: rewrite each "
                                                                      "row's instruction with a seeded draw."),
        fixed_instruction: str = typer.Option(None, "--fixed-instruction", help="One instruction for all rows "
                                                                                "('@first' = row 1's)."),
        template: str = typer.Option(None, "--template", help=r"User-turn layout, default '\n{context}\n\n\n"
                                                              r"{instruction}' (use real newlines or YAML)."),
        token: str = typer.Option(None, "--token", help="Special token ('' = none), default <sep>."),
        allow_repeat: bool = typer.Option(None, "--allow-repeat/--no-allow-repeat", help="Reuse cache rows when "
                                                                                         "there are too few."),
        exclude_truncated: bool = typer.Option(None, "--exclude-truncated/--keep-truncated",
                                               help="Exclude (default) or keep answers cut at the sampling budget."),
        model: str = typer.Option(None, "--model", help="Tokenizer for the token check ('' skips)."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML BuildConfig (options override it)."),
        overrides: list[str] = typer.Argument(None, help="key=value overrides, applied last."),
    ) -> None:
        """Build DIR/train.jsonl + manifest.json from downstream data and a diverse cache."""
        from rich.console import Console
        from rich.table import Table

        from delia.mixing import BuildConfig, build

        given = dict(downstream=downstream, diverse=diverse, ratio=ratio, seed=seed, out=out, schedule=schedule,
                     instructions=instructions, fixed_instruction=fixed_instruction, template=template, token=token,
                     allow_repeat=allow_repeat, exclude_truncated=exclude_truncated, model=model)
        cfg = cli_config(BuildConfig, config, overrides, given)
        m = build(cfg)
        err = Console(stderr=True)
        table = Table("downstream", "diverse", "total", "ratio (req/real)", "instructions", "excluded",
                      title=f"{cfg.out}/train.jsonl ({m['schedule']}, seed {m['seed']})", title_justify="left")
        c = m["counts"]
        table.add_row(str(c["downstream"]), str(c["diverse"]), str(c["total"]),
                      f"{m['ratio']['requested']:g} / {m['ratio']['realised']:g}",
                      f"{m['instructions']['mode']}: {m['instructions']['distinct']} distinct",
                      str(m["excluded"]["total"]))
        err.print(table)
        for note in (m["token_check"] or {}).get("notes", []):
            err.print(f"[dim]note: {note}[/dim]")
        for w in m["warnings"]:
            err.print(f"[yellow]warning:[/yellow] {w}")

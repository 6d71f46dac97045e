"""`delia diversify`: make N instruction variants containing the token, or check an existing list."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("diversify")
    def diversify_cmd(
        out: str = typer.Option(None, "--out", "-o", help="Output instruction list (one per line)."),
        method: str = typer.Option(None, "--method", "-m", help="grammar (offline) or llm."),
        n: int = typer.Option(None, "-n", help="Variants to keep (default 60)."),
        task: list[str] = typer.Option(None, "--task", help="Task text (repeatable); see docs/build.md."),
        seeds: str = typer.Option(None, "--seeds", help="Seed instructions file (each line has the token)."),
        format_text: str = typer.Option(None, "--format-text", help="Text inside --task to replace by the token."),
        token: str = typer.Option(None, "--token", help="Special token, default <sep>."),
        seed: int = typer.Option(None, "--seed", help="Seed (default 0)."),
        llm_model: str = typer.Option(None, "--llm-model", help="Model the LLM engine serves (llm.model)."),
        base_url: str = typer.Option(None, "--base-url", help="OpenAI-compatible API root (llm.base_url)."),
        model: str = typer.Option(None, "--model", help="Tokenizer for the token check ('' skips)."),
        check: Path = typer.Option(None, "--check", help="Only report statistics and problems of this list."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML DiversifyConfig (options override it)."),
        overrides: list[str] = typer.Argument(None, help="key=value overrides, applied last."),
    ) -> None:
        """Paraphrase a task instruction N ways; every variant names the format only through the token."""
        from rich.console import Console
        from rich.table import Table

        from delia.diversify.stage import DiversifyConfig, report_path, run_diversify
        from delia.mixing.cli import cli_config

        err = Console(stderr=True)
        llm = {k: v for k, v in dict(model=llm_model, base_url=base_url).items() if v is not None}
        given = dict(out=out if check is None else str(check), method=method, n=n, task=task or None,
                     seeds=seeds if check is None else str(check), format_text=format_text, token=token, seed=seed,
                     tokenizer_model=model, llm=llm or None)
        cfg = cli_config(DiversifyConfig, config, overrides, given)
        if check is not None:
            result = _check(cfg, check)
        else:
            r = run_diversify(cfg)
            result = {"variants": r.variants, "stats": r.stats, "token_check": r.token_check}
        table = Table("statistic", "value", title=f"{len(result['variants'])} variants", title_justify="left")
        for k, v in result["stats"].items():
            table.add_row(k, f"{v:.3f}" if isinstance(v, float) else str(v))
        Console().print(table)
        tc = result.get("token_check") or {}
        for note in tc.get("notes", []):
            err.print(f"[dim]note: {note}[/dim]")
        for w in tc.get("warnings", []) + result.get("problems", []):
            err.print(f"[yellow]warning:[/yellow] {w}")
        if check is None:
            err.print(f"wrote {cfg.out} and {report_path(cfg.out)}")

    def _check(cfg, path: Path) -> dict:
        from delia.diversify.stage import load_seeds
        from delia.diversify.text import FilterConfig, diversity_stats, reject_reason
        from delia.diversify.tokens import check_special_token

        load_seeds(cfg)  # raises DataError naming file:line for lines without the token
        from delia.data.jsonl import read_text_lines

        lines = read_text_lines(path)
        numbered = [(i, ln.strip()) for i, ln in enumerate(lines, 1) if ln.strip()]
        variants = [v for _, v in numbered]
        fcfg = FilterConfig(cfg.token, cfg.min_count, cfg.max_count, cfg.min_chars, cfg.max_chars,
                            cfg.max_similarity, cfg.similarity)
        problems = []
        for i, (line, v) in enumerate(numbered):
            reason = reject_reason(v, variants[:i], fcfg)
            if reason:
                problems.append(f"{path}:{line}: {reason}")
        tc = None
        if cfg.tokenizer_model:
            from delia.models import load_tokenizer

            tc = check_special_token(load_tokenizer(cfg.tokenizer_model), cfg.token, variants,
                                     cfg.tokenizer_model).to_dict()
        return {"variants": variants, "stats": diversity_stats(variants, cfg.token, cfg.similarity),
                "token_check": tc, "problems": problems}

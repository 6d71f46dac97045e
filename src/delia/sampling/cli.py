"""`delia sample`: parse options into a SampleConfig and call `run_sample`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `sample` command to the delia CLI."""

    @app.command("sample")
    def sample_cmd(
        out: Path = typer.Option(None, "--out", help="Cache file (JSONL); a rerun resumes it."),
        queries: Path = typer.Option(None, "--queries", help="Query file (Alpaca / messages / query-response)."),
        self_queries: int = typer.Option(None, "--self-queries", help="Let the model write N queries (Magpie)."),
        model: str = typer.Option(None, "--model", help="Model name or path (default: the embedded model)."),
        engine: str = typer.Option(None, "--engine", help="transformers (default) | vllm | openai."),
        limit: int = typer.Option(None, "--limit", help="Answer only the first N queries."),
        max_new_tokens: int = typer.Option(None, "--max-new-tokens", help="Token budget per answer (512)."),
        temperature: float = typer.Option(None, "--temperature", help="Sampling temperature (0.7)."),
        top_p: float = typer.Option(None, "--top-p", help="Nucleus mass (0.95)."),
        seed: int = typer.Option(None, "--seed", help="Sampling seed (0)."),
        batch_size: int = typer.Option(None, "--batch-size", help="transformers: rows per forward pass (32)."),
        dtype: str = typer.Option(None, "--dtype", help="transformers/vllm: auto | bf16 | fp32 | fp16."),
        base_url: str = typer.Option(None, "--base-url", help="openai: API root, e.g. http://127.0.0.1:8000/v1."),
        concurrency: int = typer.Option(None, "--concurrency", help="openai: requests in flight (8)."),
        tensor_parallel_size: int = typer.Option(None, "--tensor-parallel-size", help="vllm: GPUs per model."),
        threads: int = typer.Option(None, "--threads", help="transformers: torch CPU threads."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML SampleConfig; options and overrides win."),
        overrides: list[str] = typer.Argument(None, help="key.sub=value overrides, e.g. self_query.near_dup=0.8"),
        no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar."),
        as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    ) -> None:
        """Self-sample: the model answers each query (one-shot with the reference when there is one) into a
        resumable cache of chat rows; or, with --self-queries N, it writes N distinct queries first."""
        from rich.console import Console
        from rich.table import Table

        from delia.config import flag_overrides, load_config
        from delia.sampling.run import SampleConfig, run_sample

        cli = {"out": out, "queries": queries, "self_queries": self_queries, "model": model, "engine": engine,
               "limit": limit, "max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p,
               "seed": seed}
        opts = {"batch_size": batch_size, "dtype": dtype, "base_url": base_url, "concurrency": concurrency,
                "tensor_parallel_size": tensor_parallel_size, "threads": threads}
        # CLI options win over the YAML file, so they go in as overrides (YAML-quoted to keep strings strings)
        given = flag_overrides(cli)
        given += [f"engine_options.{k}={json.dumps(v)}" for k, v in opts.items() if v is not None]
        cfg = load_config(SampleConfig, config, given + list(overrides or []))
        try:
            summary = run_sample(cfg, progress=not no_progress)
        except KeyboardInterrupt as e:  # Ctrl-C, or SIGTERM (see delia.cli.main)
            from rich.markup import escape

            from delia.sampling.run import SampleInterrupted

            line = str(e) if isinstance(e, SampleInterrupted) else (
                f"interrupted: {cfg.out} holds every finished batch; rerun the same command to resume")
            Console(stderr=True).print(f"[yellow]{escape(line)}[/yellow]", soft_wrap=True, highlight=False)
            raise typer.Exit(130) from None
        if as_json:
            typer.echo(json.dumps(summary.to_dict(), indent=2))
            return
        table = Table("total", "done", "skipped", "duplicates", "failed", "empty", "truncated", "tokens",
                      "gen tok/s",
                      title=f"delia sample -> {cfg.out}", title_justify="left")
        table.add_row(*(str(getattr(summary, k)) for k in ("total", "done", "skipped", "duplicates", "failed",
                                                           "empty", "truncated", "new_tokens")),
                      f"{summary.new_tokens / max(summary.generate_seconds, 1e-9):.1f}")
        Console().print(table)
        for qid, reason in list(summary.failures.items())[:10]:
            Console(stderr=True).print(f"[red]failed[/red] {qid}: {reason}")
        if summary.failed:
            Console(stderr=True).print(f"[yellow]{summary.failed} row(s) failed; rerun to retry them[/yellow]")
            raise typer.Exit(1)

"""`delia eval`: parse options, load an EvalConfig, call `run_eval`, print the headline table."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `eval` command to the delia CLI."""

    @app.command("eval")
    def eval_cmd(
        overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. halu.token_init=mean "
                                                          "analysis.hidden=false generation.batch_size=8"),
        data: str = typer.Option(None, "--data", help="Examples file (halu test/chat rows, or translation src/ref)."),
        out: str = typer.Option(None, "--out", help="Output directory (resumes cached generations)."),
        task: str = typer.Option(None, "--task", help="halu (default) | translation | json | label | text "
                                                          "(your task: options under custom.*, e.g. custom.labels)."),
        model: str = typer.Option(None, "--model", help="Base model name or path (default smollm2-135m-instruct)."),
        adapter: str = typer.Option(None, "--adapter", help="Training run directory (delia train --out)."),
        instructions: str = typer.Option(None, "--instructions", "-i",
                                         help="instruction sets, e.g. 'seen:5,unseen:all,explicit' "
                                              "(halu.instructions, or custom.instructions for your task)."),
        limit: int = typer.Option(None, "--limit", help="Only the first N examples."),
        batch_size: int = typer.Option(None, "--batch-size", help="Generation batch size."),
        max_new_tokens: int = typer.Option(None, "--max-new-tokens",
                                           help="Generation budget per reply (default: from the data, "
                                                "max(256, 2 x p99 of the gold replies' tokens))."),
        dtype: str = typer.Option(None, "--dtype", help="auto (as the adapter trained) | fp32 | bf16 | fp16."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML EvalConfig."),
        show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
    ) -> None:
        """Format/label accuracy across instruction phrasings (halu) or BLEU/chrF++ (translation), plus loss,
        first-token state space and hidden-state alignment; writes metrics.json, predictions.jsonl, summary.md."""
        import yaml

        from delia.config import flag_overrides, load_config, to_dict
        from delia.evaluation.config import EvalConfig
        from delia.task import get_task

        # the task's own options section takes --instructions (a YAML's task is not known yet: halu's then)
        section = get_task(task).options_key if task and instructions else "halu"
        flags = {"data": data, "out": out, "task": task, "model": model, "adapter": adapter,
                 f"{section}.instructions": instructions, "limit": limit, "generation.batch_size": batch_size,
                 "generation.max_new_tokens": max_new_tokens, "dtype": dtype}
        # JSON-quote flag values so YAML never reinterprets them ("seen:5,unseen" stays a string)
        cli = flag_overrides(flags)
        cfg = load_config(EvalConfig, config, overrides=cli + list(overrides or []))
        if show_config:
            typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            return
        from delia.evaluation.report import summary_lines
        from delia.evaluation.run import run_eval

        try:
            metrics = run_eval(cfg)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see delia.cli.main)
            typer.echo(f"interrupted: {cfg.out}/generations.jsonl keeps every finished generation; rerun the same "
                       f"command to resume", err=True)
            raise typer.Exit(130) from None
        typer.echo("\n".join(summary_lines(metrics)))
        typer.echo(f"\nwrote {cfg.out}/metrics.json, predictions.jsonl, summary.md")

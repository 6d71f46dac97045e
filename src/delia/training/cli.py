"""`delia train`: parse options, load a TrainConfig, call `run_train`."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    """Add the `train` command to the delia CLI."""

    @app.command("train", context_settings={"allow_extra_args": False})
    def train_cmd(
        overrides: list[str] = typer.Argument(None, help="key=value overrides, e.g. lora_r=8 trl.max_grad_norm=0.5"),
        data: str = typer.Option(None, "--data", help="Training JSONL (chat messages rows)."),
        out: str = typer.Option(None, "--out", help="Run directory to write (resumed when it has checkpoints)."),
        model: str = typer.Option(None, "--model", help="Base model name or path (default smollm2-135m-instruct)."),
        config: Path = typer.Option(None, "--config", "-c", help="YAML TrainConfig (configs/train_*.yaml)."),
        max_steps: int = typer.Option(None, "--max-steps", help="Stop after N optimizer steps (smoke runs)."),
        merge: bool = typer.Option(None, "--merge/--no-merge", help="Also write a merged model to RUN/merged."),
        resume: str = typer.Option(None, "--resume", help="auto (default) | always | never."),
        show_config: bool = typer.Option(False, "--show-config", help="Print the resolved config and exit."),
    ) -> None:
        """LoRA SFT with the paper's recipe; trains the new special token's embedding too."""
        import yaml

        from delia.config import flag_overrides, load_config, to_dict
        from delia.training.config import TrainConfig

        # Flags that are given override the YAML file; key=value overrides come last and win over both.
        flags = {"data": data, "out": out, "model": model, "max_steps": max_steps, "merge": merge, "resume": resume}
        cli = flag_overrides(flags)
        cfg = load_config(TrainConfig, config, overrides=cli + list(overrides or []))
        if show_config:
            typer.echo(yaml.safe_dump(to_dict(cfg), sort_keys=False))
            return
        from delia.training.train import run_train

        try:
            result = run_train(cfg)
        except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see delia.cli.main)
            typer.echo(f"interrupted: {cfg.out} keeps its last complete checkpoint; rerun the same command to "
                       f"resume", err=True)
            raise typer.Exit(130) from None
        verb = "already trained" if result.skipped else "trained"
        loss = f", loss {result.train_loss:.4f}" if result.train_loss is not None else ""
        typer.echo(f"{verb}: {result.run_dir} (step {result.global_step}{loss})")

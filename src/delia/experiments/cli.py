"""`delia experiment CONFIG.yaml` and `delia report DIR`: parse, load the config, call one function."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

console = Console(stderr=True)


def load_experiment(config: Path, overrides: list[str] | None = None):
    """The ExperimentConfig from YAML + `key.sub=value` overrides."""
    from delia.config import load_config
    from delia.experiments.config import ExperimentConfig

    return load_config(ExperimentConfig, config, overrides or [])


def plan_table(plan, estimate) -> Table:
    """One row per step: kind, key, what it does, status and estimated seconds."""
    from rich.markup import escape

    from delia.experiments.estimate import describe_step

    root = Path(plan.exp.out_dir)
    table = Table("#", "step", "key", "what", "status", "est.", title=f"plan: {plan.exp.name} -> {root}")
    for i, s in enumerate(plan.steps, 1):
        secs = estimate.per_step[s.key]
        table.add_row(str(i), s.kind, s.key, escape(describe_step(s)), "done" if estimate.done[s.key] else "todo",
                      "–" if estimate.done[s.key] else _hms(secs))
    return table


def _hms(secs: float) -> str:
    secs = int(round(secs))
    return f"{secs // 3600}h{secs % 3600 // 60:02d}m" if secs >= 3600 else f"{secs // 60}m{secs % 60:02d}s"


def run_and_report(exp, label: str, dry_run: bool = False, report: bool = True, only: str | None = None,
                   calibrate: bool = False, collect: bool = False) -> None:
    """Plan `exp`, print the plan and its estimate, run it (unless `dry_run`) and write the report; the body of
    `delia experiment`, shared with `delia run`. `label` names the config in error messages. `collect`: run
    nothing, gather the plan's finished runs into results and the report."""
    import time

    from rich.markup import escape

    from delia.experiments.estimate import describe_step, estimate
    from delia.experiments.plan import expand
    from delia.experiments.runner import run_experiment

    from delia.config import ConfigError

    try:
        plan = expand(exp)  # checks every method's options and recipe before anything runs
    except ConfigError as e:
        raise ConfigError(f"{label}: {e}") from None
    if collect:
        _collect(plan, report)
        return
    if only:
        from delia.experiments.plan import Plan
        from delia.experiments.stages import SPECS

        kinds = {k.strip() for k in only.split(",") if k.strip()}
        if kinds - set(SPECS):
            raise typer.BadParameter(f"unknown step kinds {sorted(kinds - set(SPECS))}; known: {sorted(SPECS)}")
        plan = Plan(plan.exp, plan.runs, [s for s in plan.steps if s.kind in kinds])
    from delia.experiments import calibrate as cal

    if calibrate:
        console.print(f"calibration written to {cal.calibrate()}")
    est = estimate(plan)
    out = Console()
    out.print(plan_table(plan, est))
    source = cal.calibrated(exp.cost)[1]
    out.print(f"{len(plan.runs)} runs, {len(plan.steps)} distinct steps ({est.n_todo} to do); estimated "
              f"{_hms(est.total)} with the `cost:` model (seconds per row; "
              + (f"calibrated on this machine: {source}" if source else "shipped defaults; `--calibrate` "
                 "measures this machine") + "; see docs/experiments.md)"
              + ("; evaluations sized by the replies of finished ones (mean new tokens per reply: "
                 + ", ".join(f"{'tuned' if k else 'base'} {v:.0f}" for k, v in sorted(est.reply_tokens.items(),
                                                                                     reverse=True))
                 + "), otherwise by the full budget" if est.reply_tokens else "")
              + ("; rescaled by this grid's finished steps (measured / modelled: "
                 + ", ".join(f"{k} x{f:.2f} over {n}" for k, (f, n) in sorted(est.scale.items())) + ")"
                 if est.scale else "")
              + ("; sampling sized by the cached answers (mean new tokens: "
                 + ", ".join(f"{v:.0f}" for v in est.answer_tokens.values()) + ")" if est.answer_tokens else ""))
    if dry_run:
        return
    t0 = time.perf_counter()

    left = {s.key: est.per_step[s.key] for s in plan.steps if not est.done[s.key]}
    running: list = []  # [(index, step)] while a step runs, for the interrupt message
    finished = [0]

    def on_step(i: int, n: int, step, status: str) -> None:
        running[:] = [(i, step)] if status == "start" else []
        finished[0] += status == "done"
        if status in ("start", "fail", "blocked"):
            colour = {"start": "cyan", "fail": "red", "blocked": "yellow"}[status]
            elapsed = _hms(time.perf_counter() - t0)
            console.print(f"[{colour}][{i + 1}/{n}] {status} {step.kind} {step.key}[/{colour}] "
                          f"{escape(describe_step(step))} ({elapsed} elapsed, ~{_hms(sum(left.values()))} left "
                          f"by the cost model)", highlight=False)
        left.pop(step.key, None) if status != "start" else None

    try:
        outcome = run_experiment(plan, on_step=on_step)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (see delia.cli.main)
        where = ""
        if running:
            i, step = running[0]
            where = f" during step {i + 1}/{len(plan.steps)} ({step.kind} {step.key}, resumable)"
        console.print(f"[yellow]interrupted{where} after {_hms(time.perf_counter() - t0)}: {finished[0]} "
                      f"step(s) finished in this call and every finished step is kept; rerun the same "
                      f"command to resume[/yellow]", soft_wrap=True, highlight=False)
        raise typer.Exit(130) from None
    out.print(f"ran {len(outcome.ran)}, skipped {len(outcome.skipped)} finished, failed {len(outcome.failed)}, "
              f"blocked {len(outcome.blocked)} in {_hms(outcome.seconds)}; results: {exp.out_dir}/results.csv")
    if report and outcome.results:
        from delia.experiments.report import Results, build_report, main_table

        path = build_report(exp.out_dir)
        res = Results(Path(exp.out_dir))
        typer.echo("\n".join(main_table(res, res.sets())))  # plain text: a markdown table must not wrap
        text = path.read_text()
        if "## Verdict" in text:  # what the run says, as the report opens with it (a new user reads this first)
            typer.echo("\n## Verdict" + text.split("## Verdict", 1)[1].split("\n## ", 1)[0].rstrip() + "\n")
        out.print(f"report: {path}")
    for name, err in outcome.failed.items():
        console.print(f"[red]failed {name}: {err}[/red]")
    if outcome.failed or outcome.blocked:
        raise typer.Exit(1)


def _collect(plan, report: bool) -> None:
    """Results and report for the whole plan from its finished steps, running nothing: after a grid was run in
    parts (`--only`, or narrowed by overrides such as grid.seeds=[1]), each of which wrote results for its part."""
    import yaml

    from delia.config import to_dict
    from delia.experiments.runner import git_info, write_results

    root = Path(plan.exp.out_dir)
    if not (root / "steps").is_dir():
        raise typer.BadParameter(f"{root}: no steps/ here yet; run the experiment first", param_hint="--collect")
    (root / "experiment.yaml").write_text(yaml.safe_dump(to_dict(plan.exp), sort_keys=False))
    results = write_results(plan, git_info())
    missing = [r.id for r in plan.runs if r.id not in {x["run"] for x in results}]
    console.print(f"collected {len(results)} of {len(plan.runs)} runs into {root}/results.csv"
                  + (f"; not finished yet: {', '.join(missing)}" if missing else ""), highlight=False,
                  soft_wrap=True)
    if report and results:
        from delia.experiments.report import build_report

        console.print(f"report: {build_report(root)}")


def register(app: typer.Typer) -> None:
    @app.command("experiment")
    def experiment_cmd(
        config: Path = typer.Argument(..., help="Experiment YAML (configs/demo.yaml, configs/cpu_halu.yaml, ...)."),
        overrides: list[str] = typer.Argument(None, help="key.sub=value overrides, e.g. grid.seeds=[1,2]."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan with estimated cost; run nothing."),
        calibrate: bool = typer.Option(False, "--calibrate", help="First measure this machine's cost model (about "
                                                                  "a minute, cached per CPU, dtype and torch)."),
        report: bool = typer.Option(True, "--report/--no-report", help="Write DIR/report.md at the end."),
        only: str = typer.Option(None, "--only", help="Run only steps of these kinds (comma-separated: sample, "
                                                      "subset, slice, build, transform, train, eval, "
                                                      "drift_answers, drift), e.g. `--only sample,slice,subset,"
                                                      "build,train` trains now and evaluates later."),
        collect: bool = typer.Option(False, "--collect", help="Run nothing: gather every finished run of the "
                                                              "config into results.csv and the report (after "
                                                              "running it in parts)."),
    ) -> None:
        """Run a grid of methods x sizes x ratios x seeds; finished steps are skipped, so reruns resume."""
        run_and_report(load_experiment(config, overrides), str(config), dry_run, report, only, calibrate, collect)

    @app.command("run")
    def run_cmd(
        task: str = typer.Argument(..., help="Task YAML (see README 'Bring your own task'), or builtin:NAME for a "
                                             "packaged task, e.g. builtin:langid."),
        overrides: list[str] = typer.Argument(None, help="key.sub=value overrides, e.g. ratio=3 holdout.rows=50."),
        dry_run: bool = typer.Option(False, "--dry-run", help="Write the data files and experiment.yaml, print the "
                                                              "plan with estimated cost; train nothing."),
    ) -> None:
        """Bring your own task: split your examples, paraphrase your instruction around <sep>, then base vs plain
        tuning vs CIT vs DELIA on held-out rows under seen and unseen phrasings, and the report."""
        from delia.experiments.taskrun import compile_task
        from delia.experiments.usertask import load_task

        compiled = compile_task(load_task(task, overrides))
        info = compiled.info
        console.print(f"{task}: {info['rows']} rows ({info['train_rows']} train, {info['test_rows']} test), task "
                      f"{info['task']}, {len(info['phrasings']['seen'])} seen + {len(info['phrasings']['unseen'])} "
                      f"unseen phrasings -> {compiled.out}/data/; rerun: delia experiment "
                      f"{compiled.out}/experiment.yaml", highlight=False, soft_wrap=True)
        run_and_report(load_experiment(compiled.out / "experiment.yaml"), str(task), dry_run, True)
        if not dry_run and (compiled.out / "results.json").exists():
            from delia.experiments.answer import recommendation

            typer.echo("\n".join(recommendation(compiled.out)))

    @app.command("seeds")
    def seeds_cmd(
        files: list[Path] = typer.Argument(..., help="results.csv files (from `delia experiment` or `delia "
                                                     "report`); runs made in parts, sessions or on other machines."),
        a: str = typer.Option("delia", "--a", help="Method A."),
        b: str = typer.Option("cit_steps", "--b", help="Method B (the control)."),
        ratio: float = typer.Option(None, "--ratio", help="Diverse-data ratio of the methods that have one "
                                                         "(needed when a method ran at several)."),
        set_name: str = typer.Option("unseen", "--set", help="Instruction set of the accuracies."),
    ) -> None:
        """A vs B seed by seed: each training seed's difference and a Student-t interval over seeds, as a markdown
        table (the report's "Between training runs" section, across results.csv files)."""
        from delia.experiments.compare import md_table
        from delia.experiments.seed_tables import (DRIFT, EXPLAIN, HEADER, SCORES, SeedsError, compare_seeds,
                                                   from_csv, rows)

        scores = from_csv(files)

        def spec(method: str) -> tuple[str, float | None]:
            ratios = sorted({s.ratio for s in scores if s.method == method}, key=lambda r: (r is not None, r or 0))
            if not ratios:
                have = sorted({s.method for s in scores})
                raise SeedsError(f"{', '.join(map(str, files))}: no seeded run of {method!r} (methods: "
                                 f"{', '.join(have) or 'none'})")
            if ratios == [None]:
                return method, None
            if ratio is not None and ratio in ratios:
                return method, ratio
            raise SeedsError(f"{method!r} ran at ratios {', '.join(f'{r:g}' for r in ratios if r is not None)}: "
                             "pick one with --ratio" if ratio is None else
                             f"{method!r} has no run at ratio {ratio:g} (ratios: "
                             f"{', '.join(f'{r:g}' for r in ratios if r is not None)})")

        comps = compare_seeds(scores, spec(a), spec(b), [f"{set_name}.{m}" for m in SCORES] + [DRIFT])
        if not comps:
            raise SeedsError(f"{a} and {b} share no training seed with scores in {', '.join(map(str, files))}")
        typer.echo("\n".join([EXPLAIN, "", *md_table(HEADER, rows(comps))]))
        used = sorted({src for s in scores for src in [s.source] if (s.method, s.ratio) in (spec(a), spec(b))})
        console.print(f"runs: {', '.join(used)}", highlight=False, soft_wrap=True)

    @app.command("report")
    def report_cmd(directory: Path = typer.Argument(..., help="Experiment directory (holds results.json).")) -> None:
        """Rebuild DIR/report.md and DIR/figures/*.png from saved results only."""
        from delia.experiments.report import build_report

        path = build_report(directory)
        typer.echo(path.read_text())
        console.print(f"wrote {path}")

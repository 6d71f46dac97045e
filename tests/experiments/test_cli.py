"""`delia experiment` (dry run and run) and `delia report` through the real CLI, with fake stages."""

from __future__ import annotations

import yaml
from typer.testing import CliRunner

from delia.cli import app


def _write(make_exp, tmp_path):
    from delia.config import to_dict

    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(to_dict(make_exp())))
    return path


def test_dry_run_prints_the_plan_and_runs_nothing(make_exp, fake_stages, tmp_path):
    res = CliRunner().invoke(app, ["experiment", str(_write(make_exp, tmp_path)), "--dry-run"])
    assert res.exit_code == 0, res.output
    assert "3 runs, 13 distinct steps (13 to do)" in " ".join(res.output.split())
    assert sum(fake_stages.calls.values()) == 0 and not (tmp_path / "exp/results.json").exists()


def test_run_then_report(make_exp, fake_stages, tmp_path):
    cfg = _write(make_exp, tmp_path)
    res = CliRunner().invoke(app, ["experiment", str(cfg), "grid.seeds=[7]"])
    assert res.exit_code == 0, res.output
    assert "| delia | 2 | 1 | 50.0 [" in res.output and "ran 13, skipped 0" in " ".join(res.output.split())
    # the verdict follows the main table, as the report opens with it (one seed: it says what that cannot show)
    verdict = res.output.split("## Verdict", 1)[1]
    assert res.output.index("| delia | 2 | 1 | 50.0 [") < res.output.index("## Verdict")
    assert "**What a run this size can show**" in verdict and "## Main results" not in verdict
    res = CliRunner().invoke(app, ["experiment", str(cfg), "grid.seeds=[7]", "--dry-run"])
    assert "(0 to do)" in " ".join(res.output.split())
    res = CliRunner().invoke(app, ["report", str(tmp_path / "exp")])
    assert res.exit_code == 0 and "## Table 1" in res.output and (tmp_path / "exp/report.md").exists()


def test_failed_steps_exit_nonzero(make_exp, fake_stages, tmp_path):
    fake_stages.fail_on = {"eval"}
    res = CliRunner().invoke(app, ["experiment", str(_write(make_exp, tmp_path))])
    assert res.exit_code == 1 and "failed eval/" in res.output


def test_ls_methods_lists_every_method():
    res = CliRunner().invoke(app, ["ls", "methods"])
    for name in ("original", "icl", "cit", "random_init", "mean_init", "fact_based", "dmt", "ctg", "dipmt",
                 "neftune", "delia", "wo_diverse", "wo_diversified", "wo_all", "w_all"):
        assert name in res.output


def test_an_interrupt_says_which_step_and_the_rerun_resumes(make_exp, fake_stages, tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM (raised as KeyboardInterrupt by delia.cli.main) during a training step."""
    from delia.experiments import stages

    real_train = stages.RUNNERS["train"]

    def interrupted(config, inputs, out):
        raise KeyboardInterrupt("signal SIGTERM")

    monkeypatch.setitem(stages.RUNNERS, "train", interrupted)
    cfg = _write(make_exp, tmp_path)
    res = CliRunner().invoke(app, ["experiment", str(cfg)])
    text = " ".join(res.output.split())
    assert res.exit_code == 130, res.output
    assert "interrupted during step" in text and "(train " in text and "rerun the same command to resume" in text
    assert not list((tmp_path / "exp/steps/train").glob("*/done.json"))
    done = {p: p.stat().st_mtime_ns for p in (tmp_path / "exp/steps").glob("*/*/done.json")}
    assert done  # the steps before the interrupted one finished
    monkeypatch.setitem(stages.RUNNERS, "train", real_train)
    res = CliRunner().invoke(app, ["experiment", str(cfg)])
    assert res.exit_code == 0 and "failed 0, blocked 0" in " ".join(res.output.split()), res.output
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # and were not run again


def test_collect_gathers_a_grid_run_in_parts(make_exp, fake_stages, tmp_path):
    """Each part (narrowed by overrides) writes results for its own runs only; --collect gathers them all
    without running anything, and says which runs are not finished."""
    import json

    cfg = _write(make_exp, tmp_path)
    results = tmp_path / "exp/results.json"
    for part in ("grid.methods=[original,cit]", "grid.methods=[delia]"):
        assert CliRunner().invoke(app, ["experiment", str(cfg), part]).exit_code == 0
    assert [r["method"] for r in json.loads(results.read_text())] == ["delia"]
    calls = sum(fake_stages.calls.values())
    res = CliRunner().invoke(app, ["experiment", str(cfg), "grid.seeds=[42,43]", "--collect"])
    assert res.exit_code == 0, res.output
    assert sum(fake_stages.calls.values()) == calls  # ran nothing
    assert sorted(r["method"] for r in json.loads(results.read_text())) == ["cit", "delia", "original"]
    out = " ".join(res.output.split())
    assert "collected 3 of 5 runs" in out and "not finished yet" in out and "seed43" in out.replace("_", "")
    assert (tmp_path / "exp/report.md").exists()
    assert "43" in (tmp_path / "exp/experiment.yaml").read_text()


def test_collect_before_any_run_is_a_clear_error(make_exp, tmp_path):
    res = CliRunner().invoke(app, ["experiment", str(_write(make_exp, tmp_path)), "--collect"])
    text = " ".join(res.output.replace("│", " ").split())
    assert res.exit_code != 0 and "no steps/ here yet; run the experiment first" in text

"""Seed-level comparisons: the t interval, pairing by seed, results.csv files combined, the report section and
`delia seeds`."""

from __future__ import annotations

import csv
import math
import shutil
from pathlib import Path

import pytest

from delia.experiments.report import build_report
from delia.experiments.seed_tables import SeedsError, compare_seeds, from_csv, seed_section
from delia.experiments.stats import seed_interval, t975
from tests.clirun import run_cli
from tests.experiments.test_compare import VALID, write_experiment

COLUMNS = ["run", "method", "size", "ratio", "seed", "drift_nll", "unseen.task_valid", "unseen.task_valid.ci_low",
           "unseen.label_accuracy"]


def write_csv(path: Path, runs: list[tuple]) -> Path:
    """results.csv rows: (method, ratio, seed, drift, task_valid, label_accuracy)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(COLUMNS)
        w.writerow(["original/base", "original", "", "", "", 0.58, 0.0, 0.0, 0.2])  # untrained: skipped
        for method, ratio, seed, drift, tv, la in runs:
            name = f"{method}/ratio{ratio}-seed{seed}" if ratio else f"{method}/seed{seed}"
            w.writerow([name, method, 100, ratio or "", seed, drift, tv, 0.0, la])
    return path


def test_t_quantiles_and_the_interval_over_seeds():
    assert t975(1) == 12.706 and t975(2) == 4.303 and t975(30) == 2.042
    assert t975(60) == pytest.approx(2.000, abs=1e-3) and t975(1000) == pytest.approx(1.962, abs=1e-3)
    with pytest.raises(ValueError):
        t975(0)
    iv = seed_interval([0.18, 0.20, 0.22])  # mean 0.2, sd 0.02: half-width 4.303 * 0.02 / sqrt(3) = 0.05
    assert iv.mean == pytest.approx(0.2) and iv.high - iv.mean == pytest.approx(4.303 * 0.02 / math.sqrt(3))
    assert iv.significant and (iv.n_keys, iv.n_clusters) == (3, 3)
    assert not seed_interval([0.1, 0.2, 0.3]).significant  # same mean, 5x the spread
    # one seed breaks: the mean moves, the interval widens to cover 0
    broken = seed_interval([0.01, 0.02, -0.30])
    assert broken.low < 0 < broken.high and not broken.significant
    one = seed_interval([0.5])
    assert one.mean == 0.5 and math.isnan(one.low) and not one.significant
    assert math.isnan(seed_interval([]).mean)


def test_runs_pair_by_seed_and_only_common_seeds_count(tmp_path):
    scores = from_csv([write_csv(tmp_path / "a.csv", [
        ("delia", 10, 1, 0.52, 0.95, 0.75), ("delia", 10, 2, 0.51, 0.94, 0.74), ("delia", 3, 1, 0.53, 0.90, 0.7),
        ("cit_steps", 10, 1, 1.25, 0.96, 0.75), ("cit_steps", 10, 2, 1.19, 0.90, 0.70),
        ("cit_steps", 10, 4, 1.00, 0.50, 0.50)])])  # seed 4 has no DELIA twin
    comps = compare_seeds(scores, ("delia", 10.0), ("cit_steps", 10.0),
                          ["unseen.task_valid", "unseen.label_accuracy", "drift_nll", "seen.task_valid"])
    assert [c.metric for c in comps] == ["unseen.task_valid", "unseen.label_accuracy", "drift_nll"]
    tv = comps[0]
    assert [s for s, _, _ in tv.seeds] == [1, 2] and tv.diff.mean == pytest.approx((-0.01 + 0.04) / 2)
    assert "unseen.task_valid.ci_low" not in scores[0].values  # interval columns are not scores
    text = "\n".join(seed_section(comps))
    assert "| delia (ratio 10) | cit_steps (ratio 10) | unseen task-valid | 2 | 1: 95.0 / 96.0 (-1.0); " \
           "2: 94.0 / 90.0 (+4.0) | +1.5 |" in text
    assert "| drift NLL | 2 | 1: 0.520 / 1.250 (-0.730); 2: 0.510 / 1.190 (-0.680) | -0.705 |" in text


def test_files_combine_and_a_run_in_two_files_is_an_error(tmp_path):
    a = write_csv(tmp_path / "a.csv", [("delia", 10, 1, 0.5, 0.95, 0.7), ("cit_steps", 10, 1, 1.2, 0.96, 0.7)])
    b = write_csv(tmp_path / "b.csv", [("delia", 10, 3, 0.5, 0.61, 0.6), ("cit_steps", 10, 3, 1.1, 0.9, 0.7)])
    comps = compare_seeds(from_csv([a, b]), ("delia", 10.0), ("cit_steps", 10.0), ["unseen.task_valid"])
    assert [s for s, _, _ in comps[0].seeds] == [1, 3]
    with pytest.raises(SeedsError, match=r"b\.csv:3: run 'delia/ratio10-seed3' is also in .*c\.csv:3"):
        from_csv([write_csv(tmp_path / "c.csv", [("delia", 10, 3, 0.5, 0.9, 0.6)]), b])
    bad = tmp_path / "bad.csv"
    bad.write_text("run,method,size,ratio,seed,unseen.task_valid\nd/x,delia,100,10,1,high\n")
    with pytest.raises(SeedsError, match=r"bad\.csv: line 2: run 'd/x'"):
        from_csv([bad])
    (tmp_path / "other.csv").write_text("name,score\nx,1\n")
    with pytest.raises(SeedsError, match="line 1: not a results.csv"):
        from_csv([tmp_path / "other.csv"])


def test_delia_seeds_prints_the_table_and_clear_errors(tmp_path):
    a = write_csv(tmp_path / "a.csv", [("delia", 10, 1, 0.5, 0.95, 0.7), ("cit_steps", 10, 1, 1.2, 0.96, 0.7),
                                       ("delia", 3, 1, 0.5, 0.93, 0.7), ("cit", None, 1, 0.7, 0.88, 0.66),
                                       ("delia", 3, 2, 0.5, 0.94, 0.7), ("cit", None, 2, 0.7, 0.94, 0.74)])
    code, out = run_cli(["seeds", str(a), "--ratio", "3", "--b", "cit"])
    assert code == 0, out
    assert "| delia (ratio 3) | cit | unseen task-valid | 2 | 1: 93.0 / 88.0 (+5.0); 2: 94.0 / 94.0 (+0.0) |" in out
    code, out = run_cli(["seeds", str(a)])
    assert code != 0 and "'delia' ran at ratios 3, 10: pick one with --ratio" in out and "Traceback" not in out
    code, out = run_cli(["seeds", str(a), "--ratio", "30"])
    assert code != 0 and "'delia' has no run at ratio 30 (ratios: 3, 10)" in out
    code, out = run_cli(["seeds", str(a), "--ratio", "3", "--b", "plain"])
    assert code != 0 and "no seeded run of 'plain'" in out
    code, out = run_cli(["seeds", str(tmp_path / "none.csv")])
    assert code != 0 and "none.csv: no such results.csv" in out


def test_the_report_has_the_seed_by_seed_section(tmp_path):
    replies = {"o": lambda ex, ph: ("I think it is fine.", "stop"),
               "c1": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
               "c2": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
               "d1": lambda ex, ph: (VALID % "no", "stop"),
               "d2": lambda ex, ph: ("{'thought': \"cut", "length") if (ex, ph) == (19, 1) else (VALID % "no", "stop"),
               "i": lambda ex, ph: (VALID % "yes", "stop")}
    write_experiment(tmp_path, replies)
    text = build_report(tmp_path).read_text()
    section = text.split("## Between training runs (seed by seed)")[1].split("\n## ")[0]
    # seed 1: DELIA 100 vs CIT 50; seed 2: 97.5 vs 50 -> +48.75, t(1) half-width 12.706 * 1.77 / sqrt(2) = 15.9
    assert "| delia (ratio 3) | cit | unseen task-valid | 2 | 1: 100.0 / 50.0 (+50.0); 2: 97.5 / 50.0 (+47.5) | " \
           "+48.8 | [+32.9, +64.6] | yes |" in section
    assert "original" not in section and "icl" not in section  # untrained methods have no seeds to pair
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    assert "**Seed by seed**" in verdict and "delia (ratio 3) vs cit, unseen task-valid: +48.8 [+32.9, +64.6] " \
                                             "over 2 seeds (significant)" in verdict


def test_a_direction_the_seeds_do_not_confirm_is_marked_in_the_verdict(tmp_path):
    """CIT 50% on both seeds; DELIA 100% and 90%: every bootstrap resample favours DELIA, but two seeds whose
    differences are +50 and +40 give a t interval (1 df) that spans 0."""
    replies = {"o": lambda ex, ph: ("I think it is fine.", "stop"),
               "c1": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
               "c2": lambda ex, ph: (VALID % "no", "stop") if ex < 10 else ("{'user_query': 'x'}", "stop"),
               "d1": lambda ex, ph: (VALID % "no", "stop"),
               "d2": lambda ex, ph: (VALID % "no", "stop") if ex < 18 else ("{'thought': 'x'}", "stop"),
               "i": lambda ex, ph: (VALID % "yes", "stop")}
    write_experiment(tmp_path, replies)
    text = build_report(tmp_path).read_text()
    verdict = text.split("## Verdict")[1].split("## Main results")[0]
    row = next(line for line in verdict.splitlines() if line.startswith("| 3 | cit |"))
    assert "**better** (+45.0 [" in row and "]) ‡ |" in row
    assert "‡ not confirmed seed by seed" in verdict
    assert "delia (ratio 3) vs cit (task-valid: +45.0 [-18.5, +108.5] over 2 seeds)" in verdict
    # the same grid with both DELIA seeds at 100%: confirmed, no mark
    replies["d2"] = replies["d1"]
    for p in tmp_path.iterdir():
        if p.name in ("steps", "results.json"):
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    write_experiment(tmp_path, replies)
    verdict = build_report(tmp_path).read_text().split("## Verdict")[1].split("## Main results")[0]
    assert "‡" not in verdict and "**better** (+50.0 [" in verdict

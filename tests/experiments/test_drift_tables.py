"""The report's drift section: per-method drift with intervals and paired per-query differences, from saved
drift.jsonl files only."""

from __future__ import annotations

import json
from pathlib import Path

from delia.experiments.compare import groups
from delia.experiments.drift_tables import drift_section, drift_verdict
from delia.experiments.results import Results


def _experiment(root: Path, nll: dict[str, list[list[float]]], leak: dict[str, list[list[int]]]) -> Results:
    """results.json with one run per (method, seed); each run's drift step holds per-query nll / leak."""
    rows = []
    for method, per_seed in nll.items():
        for seed, values in enumerate(per_seed):
            step = f"steps/drift/{method}{seed}"
            (root / step).mkdir(parents=True)
            (root / step / "drift.jsonl").write_text("".join(
                json.dumps({"id": f"q{i}", "nll": v, "leak": bool(leak[method][seed][i])}) + "\n"
                for i, v in enumerate(values)))
            steps = {"drift": step, "test": f"steps/eval/{method}{seed}",
                     **({"train": f"steps/train/{method}{seed}"} if method != "original" else {})}
            rows.append({"run": f"{method}/{seed}", "method": method, "size": 100 if method != "original" else None,
                         "ratio": {"delia": 3.0, "cit": None, "original": None}[method],
                         "seed": seed if method != "original" else None, "steps": steps, "metrics": {}})
    (root / "results.json").write_text(json.dumps(rows))
    return Results(root)


def test_paired_drift_difference_is_exact_for_a_constant_shift(tmp_path):
    res = _experiment(tmp_path, {"cit": [[1.0, 2.0, 3.0], [1.2, 2.2, 3.2]], "delia": [[0.5, 1.5, 2.5], [0.7, 1.7, 2.7]],
                                 "original": [[0.4, 0.4, 0.4]]},
                      {"cit": [[1, 0, 0], [1, 1, 0]], "delia": [[0, 0, 0], [0, 0, 0]], "original": [[0, 0, 0]]})
    gs = groups(res)
    text = "\n".join(drift_section(res, gs))
    # cit: mean over seeds and queries of (1,2,3,1.2,2.2,3.2) = 2.1; delia 1.6; leak cit 3/6 = 50%
    assert "| cit | 2 | 2.100 [" in text and "| delia (ratio 3) | 2 | 1.600 [" in text
    assert "| 50.0 [" in text
    # delia - cit = -0.5 on every query of each seed pair; seeds are resampled per method (not paired), so the
    # 0.2 seed offset widens the interval to exactly [-0.7, -0.3]: still significant
    assert "| delia (ratio 3) | cit | drift NLL | -0.500 | [-0.700, -0.300] | yes |" in text
    verdict = "\n".join(drift_verdict(res, gs))
    assert "delia (ratio 3) vs cit" in verdict and "-0.500 [-0.700, -0.300], significant" in verdict


def test_no_drift_steps_no_section(tmp_path):
    (tmp_path / "results.json").write_text(json.dumps([{"run": "cit/1", "method": "cit", "size": 100, "ratio": None,
                                                        "seed": 1, "steps": {"train": "x"}, "metrics": {}}]))
    res = Results(tmp_path)
    assert drift_section(res, groups(res)) == [] and drift_verdict(res, groups(res)) == []


def test_per_query_drift_values_are_exported(tmp_path):
    import csv

    from delia.experiments.report import write_items

    res = _experiment(tmp_path, {"cit": [[1.0, 2.0]], "delia": [[0.5, 0.25]]}, {"cit": [[0, 1]], "delia": [[0, 0]]})
    n_items, n_drift = write_items(res, tmp_path / "items.csv", tmp_path / "drift_items.csv")
    assert (n_items, n_drift) == (0, 4)  # no test predictions saved here
    with open(tmp_path / "drift_items.csv", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["run"], r["query_id"], float(r["nll"]), r["leak"]) for r in rows] == [
        ("cit/0", "q0", 1.0, "0"), ("cit/0", "q1", 2.0, "1"), ("delia/0", "q0", 0.5, "0"), ("delia/0", "q1", 0.25, "0")]

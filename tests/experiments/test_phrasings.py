"""The report's per-phrasing robustness section and plot, with hand-computed numbers from fake predictions."""

from __future__ import annotations

import json

from delia.experiments import expand, stages
from delia.experiments.report import build_report
from delia.experiments.runner import run_experiment


def _predictions(trained: bool) -> list[dict]:
    """3 phrasings per set x 4 examples: a trained model is valid on examples 0..j under phrasing j (25/50/75%),
    the base model never; gold 'no' everywhere, a valid reply says 'no' except under phrasing 2 ('yes')."""
    rows = []
    for s in ("seen", "unseen"):
        for j in range(3):
            for i in range(4):
                ok = trained and i <= j
                label = ("yes" if j == 2 else "no") if ok else None
                rows.append({"example_id": f"e{i}", "instruction_id": f"{s}/{j}", "set": s, "raw": "x",
                             "finish_reason": "stop", "n_new_tokens": 3, "parsed": ok, "strict": ok,
                             "pred_label": label, "gold_label": "no", "reason": None if ok else "no '{' in the output"})
    return rows


def test_per_phrasing_table_and_plot(make_exp, fake_stages, monkeypatch, tmp_path):
    fake_eval = stages.RUNNERS["eval"]

    def run(config, inputs, out):
        summary = fake_eval(config, inputs, out)
        preds = _predictions("adapter" in inputs)
        (out / "predictions.jsonl").write_text("".join(json.dumps(p) + "\n" for p in preds))
        return summary

    monkeypatch.setitem(stages.RUNNERS, "eval", run)
    exp = make_exp(grid={"methods": ["original", "cit"]})
    run_experiment(expand(exp))
    text = build_report(exp.out_dir).read_text()
    assert "## Robustness per phrasing" in text
    # cit: 25 / 50 / 75 -> min 25, mean 50, max 75, population std 20.4; original: 0 everywhere
    assert "| cit | unseen | task-valid | 3 | 25.0 | 50.0 | 75.0 | 20.4 |" in text
    assert "| original | unseen | task-valid | 3 | 0.0 | 0.0 | 0.0 | 0.0 |" in text
    # label accuracy per phrasing: right ('no') under phrasings 0 and 1 only -> 25, 50, 0
    assert "| cit | seen | label accuracy | 3 | 0.0 | 25.0 | 50.0 | 20.4 |" in text
    assert "### `unseen` phrasings: task-valid (%)" in text and "| `unseen/2` | 0.0 | 75.0 |  |" in text
    assert (tmp_path / "exp/figures/phrasings.png").stat().st_size > 1000
    assert "![Task-valid accuracy per phrasing" in text

"""`delia run TASK.yaml` end to end through the real stages: the tiny model here, the embedded model (slow)."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from importlib import resources

from ..clirun import run_cli


def _task(tmp_path: Path, model: str, rows: int = 12) -> Path:
    """A langid task on the first `rows` packaged sentences (half English, half Icelandic), on `model`."""
    src = resources.files("delia") / "resources" / "data" / "langid" / "examples.jsonl.gz"
    lines = gzip.decompress(src.read_bytes()).decode().splitlines()[:rows]
    (tmp_path / "ex.jsonl").write_text("".join(x + "\n" for x in lines), encoding="utf-8")
    (tmp_path / "t.yaml").write_text(f"""
name: tiny
examples: ex.jsonl
instruction: Identify the language of the sentence above.
format: 'Reply with a JSON object with one key, "language", whose value is "english" or "icelandic".'
paraphrase: {{n: 5}}
holdout: {{rows: 6, phrasings: 2}}
model: {model}
threads: 1
out: {tmp_path / 'run'}
sample: {{max_new_tokens: 4, engine_options: {{batch_size: 8}}}}
train: {{max_steps: 1, batch_size: 4}}
eval: {{generation: {{max_new_tokens: 12}}, bootstrap: 10}}   # >= the longest gold reply + 1
experiment: {{build: {{exclude_truncated: false}}}}   # the random tiny model never ends an answer in 4 tokens
""")
    return tmp_path / "t.yaml"


def test_delia_run_end_to_end_on_the_tiny_model(tmp_path, tiny_dir):
    task = _task(tmp_path, tiny_dir)
    code, out = run_cli(["run", str(task), "--dry-run"])
    assert code == 0, out
    assert not (tmp_path / "run/results.json").exists() and (tmp_path / "run/experiment.yaml").exists()
    code, out = run_cli(["run", str(task)])
    assert code == 0, out
    root = tmp_path / "run"
    results = {r["method"]: r for r in json.loads((root / "results.json").read_text())}
    assert set(results) == {"original", "plain", "cit", "delia"}
    # every method answered the 6 held-out rows under 1 seen and both unseen phrasings
    for r in results.values():
        preds = [json.loads(x) for x in (root / r["steps"]["test"] / "predictions.jsonl").read_text().splitlines()]
        test_ids = json.loads((root / "data/task.json").read_text())["test_ids"]
        assert sorted({p["example_id"] for p in preds}) == sorted(test_ids)
        assert sorted({p["instruction_id"] for p in preds if p["set"] == "unseen"}) == ["unseen/0", "unseen/1"]
    # plain trained on one phrasing (yours), cit on the seen paraphrases: their training files say so
    def users(method: str) -> set[str]:
        data = json.loads((root / results[method]["steps"]["train"] / "delia_run.json").read_text())["data"]["path"]
        return {json.loads(x)["messages"][0]["content"].rsplit("\n\n", 1)[1] for x in open(data)}

    assert users("plain") == {'Identify the language of the sentence above. Reply with a JSON object with one key, '
                              '"language", whose value is "english" or "icelandic".'}
    seen = set((root / "data/instructions_seen.txt").read_text().splitlines())
    assert users("cit") == seen  # every seen phrasing; the validation and unseen ones never
    valid_phr = set((root / "data/instructions_valid.txt").read_text().splitlines())
    assert valid_phr and not valid_phr & users("cit")
    # every tuned run validated (at its last step here) and recorded the step it kept
    for method in ("plain", "cit", "delia"):
        meta = json.loads((root / results[method]["steps"]["train"] / "delia_run.json").read_text())
        assert meta["selection"]["best_step"] == 1 and meta["selection"]["validations"] == 1
    assert "## Model selection" in (root / "report.md").read_text()
    text = (root / "report.md").read_text()
    assert "## Robustness per phrasing" in text and "| `unseen/1` |" in text
    assert "- **delia (ratio 1) vs plain** on unseen phrasings: task-valid " in text
    assert (root / "figures/phrasings.png").stat().st_size > 1000
    # a rerun resumes: every step is reused
    code, out = run_cli(["run", str(task)])
    assert code == 0 and "ran 0, skipped" in " ".join(out.split())


@pytest.mark.slow
def test_packaged_langid_task_on_the_embedded_model(tmp_path):
    code, out = run_cli(["run", "builtin:langid", f"out={tmp_path / 'run'}"])
    assert code == 0, out
    text = (tmp_path / "run/report.md").read_text()
    assert "## Robustness per phrasing" in text and "delia (ratio 1) vs plain" in text

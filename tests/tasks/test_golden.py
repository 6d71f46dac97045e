"""Golden test: the paper's tasks give the numbers they gave before the task plug-ins, on the same cached
generations, and the generation cache keys are unchanged (so existing caches keep hitting).

The fixture holds real replies from runs/experiments/halu100 (an adapter's and the base model's `unseen:1`
test evaluations, and a one-token `own` evaluation of the validation rows) and hand-written translation replies;
golden_metrics.json.gz holds what the code computed from them before the refactor (commit "tasks: golden test").
"""

import gzip
import json
from pathlib import Path

import pytest

from delia.config import load_config
from delia.evaluation import run as R
from delia.evaluation.config import EvalConfig
from delia.evaluation.rows import EvalRow
from delia.generation import Generation
from delia.task import get_task

DATA = Path(__file__).parent / "data"


def _load(name):
    with gzip.open(DATA / name, "rt", encoding="utf-8") as f:
        return json.load(f)


GOLDEN = _load("golden_metrics.json.gz")
GENS = _load("golden_generations.json.gz")


def _json(obj):
    """As saved in metrics.json (NaN -> null), compared exactly (floats round-trip through JSON exactly)."""
    return json.loads(json.dumps(R._clean(obj)))


@pytest.mark.parametrize("group", sorted(GENS))
def test_halu_predictions_and_metrics_unchanged(group):
    cfg = load_config(EvalConfig, overrides=["data=builtin:halu/test", "out=unused"])
    rows = [EvalRow(r["example_id"], r["instruction_id"], r["set"], [], None, {"gold_label": r["gold_label"]})
            for r in GENS[group]]
    gens = [Generation(r["raw"], 0, r["n_new_tokens"], r["finish_reason"]) for r in GENS[group]]
    task = get_task("halu")
    preds = [task.predict(x, g, cfg) for x, g in zip(rows, gens)]
    want = GOLDEN["halu"][group]
    assert _json(preds) == want["predictions"]
    assert _json(task.metrics(preds, cfg)) == want["metrics"]
    # what an experiment's results recompute from the saved predictions is the same
    assert _json(task.rescore(want["predictions"], cfg.bootstrap, cfg.seed, cfg.ci_level)) == want["metrics"]


def test_halu_prompts_unchanged():
    cfg = load_config(EvalConfig, overrides=[
        "data=builtin:halu/test", "out=unused", "limit=3",
        "halu.instructions=seen:2,unseen:1,unseen-notoken:1,unseen-desc:1,explicit"])
    assert _json([r.__dict__ for r in get_task("halu").rows(cfg)]) == GOLDEN["halu_rows"]
    cfg = load_config(EvalConfig, overrides=["data=builtin:halu/valid", "out=unused", "limit=3",
                                             "halu.instructions=own"])
    assert _json([r.__dict__ for r in get_task("halu").rows(cfg)]) == GOLDEN["halu_rows_own"]


def test_translation_rows_predictions_and_metrics_unchanged():
    src = [json.loads(x) for x in (DATA / "translation.jsonl").read_text().splitlines()]
    cfg = load_config(EvalConfig, overrides=[f"data={DATA}/translation.jsonl", "out=unused", "task=translation"])
    task = get_task("translation")
    rows = task.rows(cfg)
    gens = [Generation(t["hyp_raw"], 0, 7, t.get("finish", "stop")) for t in src]
    preds = [task.predict(x, g, cfg) for x, g in zip(rows, gens)]
    want = GOLDEN["translation"]
    assert [{**r, "where": Path(r["where"]).name} for r in _json([r.__dict__ for r in rows])] == \
        [{**r, "where": Path(r["where"]).name} for r in want["rows"]]
    assert _json(preds) == want["predictions"]
    assert _json(task.metrics(preds, cfg)) == want["metrics"]


class _Tok:
    """Renders a prompt as its JSON text: the cache key then depends on the config's identity pieces only."""

    def apply_chat_template(self, prompt, add_generation_prompt=True, tokenize=False):
        return json.dumps(prompt)


@pytest.mark.parametrize("name,overrides", [
    ("halu", []), ("translation", ["task=translation"]),
    ("translation_all_lines", ["task=translation", "translation.first_line=false"])])
def test_generation_cache_keys_unchanged(name, overrides, tmp_path, monkeypatch):
    def fake(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        out = [Generation("x", 1, 1, "stop") for _ in prompts]
        on_batch(list(range(len(out))), out)
        return out

    monkeypatch.setattr("delia.generation.generate", fake)
    cfg = load_config(EvalConfig, overrides=["data=x", f"out={tmp_path}", *overrides])
    rows = [EvalRow("e1", "i", "s", [{"role": "user", "content": "hello"}])]
    R.generate_rows(None, _Tok(), rows, cfg, {"identity": "model@abc", "dtype": "float32"}, 64)
    key = json.loads((tmp_path / "generations.jsonl").read_text().splitlines()[0])["key"]
    assert key == GOLDEN["cache_keys"][name]

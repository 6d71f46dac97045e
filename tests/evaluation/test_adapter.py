"""`--adapter RUN`: the eval stage loads a finished training run through delia.training.load_trained."""

import json

import pytest
import torch

from delia.config import load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.hidden import concept_distances


@pytest.fixture(scope="module")
def tiny_run(tiny_dir, tmp_path_factory):
    from delia.training import TrainConfig, run_train

    d = tmp_path_factory.mktemp("adapter")
    rows = [{"id": f"r{i}", "messages": [
        {"role": "user", "content": f"\nctx {i}\n\n\nCheck it, answer in <sep>."},
        {"role": "assistant", "content": f"{{'thought': 'x{i}', 'hallucination': 'no'}}"}]} for i in range(4)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(data=str(d / "train.jsonl"), out=str(d / "run"), model=tiny_dir, batch_size=4,
                      micro_batch_size=2, max_steps=2, warmup_steps=0, learning_rate=1e-2, lora_dropout=0.0,
                      max_length=64, report_to=["none"])
    run_train(cfg)
    return str(d / "run")


def test_eval_with_adapter(tiny_run, tiny_dir, shared_data, tmp_path, monkeypatch):
    from delia.generation import Generation
    from delia.training import load_trained

    seen = []

    def gen(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        seen.append(model)
        out = [Generation("{'thought': 'x', 'hallucination': 'no'}", 1, 1, "stop") for _ in prompts]
        if on_batch:
            on_batch(list(range(len(out))), out)
        return out

    monkeypatch.setattr("delia.generation.generate", gen)
    data = tmp_path / "d.jsonl"
    data.write_text("\n".join((shared_data / "halu/test.jsonl").read_text().splitlines()[:2]) + "\n")
    from delia.evaluation.run import run_eval

    cfg = load_config(EvalConfig, overrides=[
        f"adapter={tiny_run}", f"data={data}", f"out={tmp_path / 'o'}", "bootstrap=0", "merge_adapter=false",
        f"halu.unseen_file={shared_data}/halu/instructions_unseen.txt", "halu.instructions=unseen:1"])
    m = run_eval(cfg)
    assert m["model"]["adapter"] == tiny_run and "added_tokens" not in m["model"]  # the run brings <sep>
    assert m["model"]["identity"].startswith("adapter:")
    assert type(seen[0]).__name__.startswith("Peft")
    assert m["sets"]["unseen"]["format_accuracy"]["value"] == 1.0
    # the analysis ran on the adapter model: same numbers as computing them on load_trained directly
    model, tok = load_trained(tiny_run, dtype="fp32")
    ref = concept_distances(model, tok, "<sep>", ["json", "thought"])
    assert m["hidden"]["l2"]["json"] == pytest.approx(ref.l2["json"], abs=1e-5)
    # a merged adapter gives the same values within 1e-4 (baselines.md §10)
    merged, tok2 = load_trained(tiny_run, dtype="fp32", merge=True)
    got = concept_distances(merged, tok2, "<sep>", ["json", "thought"])
    assert torch.allclose(torch.tensor(got.l2["json"]), torch.tensor(ref.l2["json"]), atol=1e-4)

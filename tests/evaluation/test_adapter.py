"""`--adapter RUN`: the eval stage loads a finished training run through delia.training.load_trained, in the
precision it trained in (runs forced to fp32 and to bf16 autocast, so every machine checks both; one run trains
only the input row of <sep>, token_side input, whose reload unties the head)."""

import json

import pytest
import torch

from delia.config import load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.hidden import concept_distances


@pytest.fixture(scope="module", params=[("fp32", None), ("bf16", None), ("bf16", "input")],
                ids=["fp32", "bf16", "bf16-input"])
def tiny_run(request, tiny_dir, tmp_path_factory):
    from delia.training import TrainConfig, run_train

    precision, side = request.param
    d = tmp_path_factory.mktemp(f"adapter-{precision}")
    rows = [{"id": f"r{i}", "messages": [
        {"role": "user", "content": f"\nctx {i}\n\n\nCheck it, answer in <sep>."},
        {"role": "assistant", "content": f"{{'thought': 'x{i}', 'hallucination': 'no'}}"}]} for i in range(4)]
    (d / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = TrainConfig(data=str(d / "train.jsonl"), out=str(d / "run"), model=tiny_dir, batch_size=4,
                      micro_batch_size=2, max_steps=2, warmup_steps=0, learning_rate=1e-2, lora_dropout=0.0,
                      max_length=64, report_to=["none"], precision=precision, token_side=side)
    run_train(cfg)
    return str(d / "run"), precision


def test_eval_with_adapter(tiny_run, tiny_dir, shared_data, tmp_path, monkeypatch):
    from delia.generation import Generation
    from delia.precision import Precision, precision_of
    from delia.training import load_trained

    tiny_run, precision = tiny_run
    autocast = {"fp32": None, "bf16": "bf16"}[precision]

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
    # dtype auto with an adapter: as trained (fp32 weights, plus bf16 autocast for the bf16 run)
    assert precision_of(seen[0]) == Precision("fp32", autocast)
    assert m["model"]["dtype"] == {"fp32": "float32", "bf16": "fp32+bf16-autocast"}[precision]
    assert m["sets"]["unseen"]["format_accuracy"]["value"] == 1.0
    # the analysis ran on the adapter model as trained: the same numbers as load_trained's, bit for bit
    model, tok = load_trained(tiny_run)
    ref = concept_distances(model, tok, "<sep>", ["json", "thought"])
    assert m["hidden"]["l2"]["json"] == ref.l2["json"]
    # a merged adapter gives the same values within the merge's rounding (baselines.md §10)
    merged, tok2 = load_trained(tiny_run, merge=True)
    got = concept_distances(merged, tok2, "<sep>", ["json", "thought"])
    atol = {"fp32": 1e-5, "bf16": 5e-3}[precision]  # measured 2e-7 and 3e-4 (on distances of 0.2-2.7)
    assert torch.allclose(torch.tensor(got.l2["json"]), torch.tensor(ref.l2["json"]), atol=atol)
    # an explicit dtype is obeyed: plain fp32 weights, no autocast
    cfg = load_config(EvalConfig, overrides=[
        f"adapter={tiny_run}", f"data={data}", f"out={tmp_path / 'o32'}", "bootstrap=0", "merge_adapter=false",
        f"halu.unseen_file={shared_data}/halu/instructions_unseen.txt", "halu.instructions=unseen:1", "dtype=fp32"])
    assert run_eval(cfg)["model"]["dtype"] == "float32" and precision_of(seen[-1]) == Precision("fp32")

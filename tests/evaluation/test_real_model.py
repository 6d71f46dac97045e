"""On the embedded SmolLM2-135M (slow): the L2 check at all 30 blocks, the gold first token, a tiny eval."""

import json

import pytest
import torch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol():
    from delia.models import add_special_tokens, load

    model, tok = load("smollm2-135m-instruct", dtype="fp32")
    add_special_tokens(model, tok, ["<sep>"], init="random", seed=2024)
    return model, tok


def test_l2_zero_at_all_30_blocks_when_sep_is_json(smol):
    from delia.evaluation.hidden import concept_distances, word_ids

    model, tok = smol
    emb = model.get_input_embeddings().weight
    sep = tok.convert_tokens_to_ids("<sep>")
    saved = emb[sep].clone()
    try:
        with torch.no_grad():
            emb[sep] = emb[word_ids(tok, "json")[0]]
        d = concept_distances(model, tok, "<sep>", ["json", "thought"])
        assert d.n_layers == 30 and max(d.l2["json"]) <= 1e-5
        assert d.summary()["thought"]["middle"] > 1.0
    finally:
        with torch.no_grad():
            emb[sep] = saved


def test_gold_first_token_is_the_opening_brace(smol, shared_data):
    from delia.data import read_records
    from delia.evaluation.prompts import halu_example
    from delia.evaluation.scoring import encode

    _, tok = smol
    for rec in read_records(shared_data / "halu/valid.jsonl")[:5]:
        ex = halu_example(rec)
        _, rids = encode(tok, rec.prompt_messages, ex.gold)
        assert tok.decode(rids[:1]) == "{'"
        assert rids[0] == 34026


def test_embedded_model_eval_smoke(shared_data, tmp_path):
    from delia.config import load_config
    from delia.evaluation.config import EvalConfig
    from delia.evaluation.run import run_eval

    m = run_eval(load_config(EvalConfig, overrides=[
        f"data={shared_data}/halu/valid.jsonl", f"out={tmp_path}", "limit=2", "halu.instructions=own",
        "generation.max_new_tokens=24", "bootstrap=100"]))
    assert m["n_rows"] == 2 and m["model"]["added_tokens"][0]["tokens"] == ["<sep>"]
    assert 0 < m["scoring"]["own"]["loss"] < 10
    assert m["hidden"]["n_layers"] == 30
    preds = [json.loads(x) for x in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert all(p["n_new_tokens"] <= 24 for p in preds)

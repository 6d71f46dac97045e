"""The `heldout` instruction set (the authors' validation phrasings) and the check that they are truly held out."""

import json

import pytest

from delia.config import ConfigError, load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.instructions import (SpecItem, check_heldout, heldout_overlap, load_set, parse_spec,
                                           seen_instructions)
from delia.evaluation.run import run_eval
from delia.generation import Generation


def test_spec_accepts_heldout_and_its_variants():
    assert parse_spec("heldout:1,heldout-notoken:1,heldout-desc:1") == [
        SpecItem("heldout", None, 1), SpecItem("heldout", "notoken", 1), SpecItem("heldout", "desc", 1)]


def test_heldout_set_is_the_valid_files_phrasings(shared_data):
    valid = shared_data / "halu/valid.jsonl"
    files = {"heldout": str(valid)}
    held = load_set(SpecItem("heldout", None, None), files, ["<sep>"], "D")
    rows = [json.loads(x) for x in valid.read_text().splitlines()]
    own = [r["messages"][0]["content"].rsplit("\n\n\n", 1)[1].strip() for r in rows]
    assert [i.text for i in held] == list(dict.fromkeys(own)) and len(held) == 11
    assert held[0].id == "heldout/00" and held[10].id == "heldout/10" and held[0].set == "heldout"
    notoken = load_set(SpecItem("heldout", "notoken", None), files, ["<sep>"], "D")
    assert all("<sep>" not in i.text for i in notoken) and notoken[0].set == "heldout-notoken"
    assert notoken[3].text == "Judge ChatGPT's response accuracy against the format to identify any hallucinations."
    desc = load_set(SpecItem("heldout", "desc", None), files, ["<sep>"], "a json object")
    assert desc[3].text == "Judge ChatGPT's response accuracy against the a json object format to identify any " \
                           "hallucinations."


def test_packaged_valid_phrasings_are_training_rows_50_to_60(shared_data):
    """A fact about the shipped data that decides where `heldout` is valid: each of the 11 validation phrasings is
    also the instruction of exactly one training row, rows 50..60 (1-based), so they are held out only for models
    trained on at most the first 49 rows. The written `unseen` phrasings occur in neither file."""
    train, valid = shared_data / "halu/train.jsonl", shared_data / "halu/valid.jsonl"
    found = heldout_overlap(valid, train)
    assert sorted(found.values()) == list(range(50, 61))
    assert heldout_overlap(valid, train, limit=49) == {}
    unseen = set((shared_data / "halu/instructions_unseen.txt").read_text().splitlines()) - {""}
    assert not unseen & set(seen_instructions(train)) and not unseen & set(seen_instructions(valid))


def test_check_heldout_refuses_phrasings_the_model_trained_on(shared_data, tmp_path):
    train, valid = shared_data / "halu/train.jsonl", shared_data / "halu/valid.jsonl"
    with pytest.raises(ConfigError, match=r"11 of its phrasings also occur in .*rows 50, 51, .*60\)"):
        check_heldout("seen:1,heldout:1", str(valid), str(train))
    first49 = tmp_path / "train49.jsonl"
    first49.write_text("\n".join(train.read_text().splitlines()[:49]) + "\n")
    check_heldout("seen:1,heldout:1", str(valid), str(first49))  # held out: no error
    check_heldout("seen:1,unseen:1", str(valid), str(train))  # no heldout set: nothing to check


def test_eval_scores_the_heldout_set(tiny_dir, shared_data, tmp_path, monkeypatch):
    test = tmp_path / "test4.jsonl"
    test.write_text("\n".join((shared_data / "halu/test.jsonl").read_text().splitlines()[:4]) + "\n")
    first30 = tmp_path / "train30.jsonl"
    first30.write_text("\n".join((shared_data / "halu/train.jsonl").read_text().splitlines()[:30]) + "\n")

    def fake(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        out = [Generation("{'thought': 'x', 'hallucination': 'no'}" if "<sep>" in p[-1]["content"] else "prose",
                          10, 5, "stop") for p in prompts]
        if on_batch:
            on_batch(list(range(len(out))), out)
        return out

    monkeypatch.setattr("delia.generation.generate", fake)
    over = [f"model={tiny_dir}", f"data={test}", "dtype=fp32", "bootstrap=0", "analysis.hidden=false",
            "halu.instructions=heldout:1,heldout-notoken:1", f"halu.heldout_file={shared_data}/halu/valid.jsonl"]
    cfg = load_config(EvalConfig, overrides=[*over, f"out={tmp_path / 'ok'}", f"halu.seen_file={first30}"])
    m = run_eval(cfg)
    assert m["sets"]["heldout"]["format_accuracy"]["value"] == 1.0
    assert m["sets"]["heldout-notoken"]["format_accuracy"]["value"] == 0.0
    preds = [json.loads(x) for x in (tmp_path / "ok/predictions.jsonl").read_text().splitlines()]
    assert {p["instruction_id"].split("/")[0] for p in preds} == {"heldout", "heldout-notoken"} and len(preds) == 8
    bad = load_config(EvalConfig, overrides=[*over, f"out={tmp_path / 'bad'}",
                                             f"halu.seen_file={shared_data}/halu/train.jsonl"])
    with pytest.raises(ConfigError, match="not held out"):
        run_eval(bad)


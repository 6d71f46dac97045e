"""The eval stage end to end on the tiny model: canned generations (exact metrics) and real ones (smoke)."""

import json
import math

import pytest
import sacrebleu

from delia.config import load_config
from delia.evaluation.config import EvalConfig
from delia.evaluation.run import run_eval
from delia.generation import Generation


def fake_generate(reply, finish=lambda text: "stop"):
    """A stand-in for delia.generation.generate returning reply(prompt_text) per prompt, batch by batch."""
    calls = []

    def gen(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        calls.append(len(prompts))
        gen.params = params
        out = [Generation(t, 10, 5, finish(t)) for t in (reply(p[-1]["content"]) for p in prompts)]
        for s in range(0, len(out), batch_size):
            if on_batch:
                on_batch(list(range(s, min(s + batch_size, len(out)))), out[s:s + batch_size])
        return out

    gen.calls = calls
    return gen


@pytest.fixture()
def halu_file(shared_data, tmp_path):
    lines = (shared_data / "halu/test.jsonl").read_text().splitlines()[:4]
    f = tmp_path / "halu4.jsonl"
    f.write_text("\n".join(lines) + "\n")
    return f, [json.loads(x)["label"] for x in lines]


def _cfg(tiny_dir, data, out, shared_data, *extra):
    return load_config(EvalConfig, overrides=[
        f"model={tiny_dir}", f"data={data}", f"out={out}", "bootstrap=200",
        f"halu.seen_file={shared_data}/halu/train.jsonl",
        f"halu.unseen_file={shared_data}/halu/instructions_unseen.txt",
        f"halu.explicit_file={shared_data}/halu/explicit_instruction.txt", *extra])


def reply(content):
    if "Consider the following task" in content:
        return "The response looks accurate to me."
    if "<sep>" not in content:
        return "{'thought': 'no token', 'hallucination': 'no'"  # never closed
    return "Sure: {'thought': 'The user's answer is odd', 'hallucination': 'yes'} done"


def test_halu_stage_with_canned_outputs(tiny_dir, shared_data, halu_file, tmp_path, monkeypatch):
    data, labels = halu_file
    gen = fake_generate(reply)
    monkeypatch.setattr("delia.generation.generate", gen)
    out = tmp_path / "out"
    cfg = _cfg(tiny_dir, data, out, shared_data, "halu.instructions=unseen:2,unseen-notoken:1,explicit")
    m = run_eval(cfg)

    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 * 2 + 4 + 4 and m["n_rows"] == 16 and m["n_examples"] == 4
    assert {p["set"] for p in preds} == {"unseen", "unseen-notoken", "explicit"}
    u = m["sets"]["unseen"]
    assert u["format_accuracy"]["value"] == 1.0 and u["format_accuracy_strict"]["value"] == 1.0
    assert u["label_accuracy"]["value"] == pytest.approx(labels.count("yes") / 4)
    assert u["label_recall"]["value"] == 1.0
    assert u["label_precision"]["value"] == pytest.approx(labels.count("yes") / 4)
    assert m["sets"]["explicit"]["format_accuracy"]["value"] == 0.0
    assert m["sets"]["explicit"]["failures"] == {"no_brace": 4}
    assert m["sets"]["unseen-notoken"]["failures"] == {"unclosed": 4}
    # per phrasing: 4 examples x 2 of 20 unseen instructions, round robin -> 8 phrasings once each
    per = m["per_instruction"]["unseen"]
    assert len(per) == 8 and all(v["n"] == 1 for v in per.values())
    assert m["robustness"]["unseen"]["format_accuracy"]["spread"] == 0.0
    p0 = next(p for p in preds if p["set"] == "unseen")
    assert p0["raw"].startswith("Sure: {") and p0["method"] == "repaired" and p0["pred_label"] == "yes"
    assert p0["value"] == {"thought": "The user's answer is odd", "hallucination": "yes"}
    bad = next(p for p in preds if p["set"] == "explicit")
    assert bad["parsed"] is False and bad["reason"] == "no '{' in the output" and bad["raw"]
    # the tiny model lacks <sep>: added with the paper's untrained random init
    assert m["model"]["added_tokens"][0]["tokens"] == ["<sep>"] and m["model"]["added_tokens"][0]["init"] == "random"
    assert m["hidden"]["n_layers"] == 2 and len(m["hidden"]["l2"]["json"]) == 3
    assert "scoring" not in m  # test rows have no gold replies
    summary = (out / "summary.md").read_text()
    # headline first, the majority-class floor beside the label accuracy, the lenient rule last
    n_yes = labels.count("yes")
    assert (f"| unseen | 8 | 100.0 [100.0, 100.0] | {100 * n_yes / 4:.1f} [" in summary
            and f"] | {100 * max(n_yes, 4 - n_yes) / 4:.1f} | " in summary)
    assert "| explicit | 0 | 4 | 0 | 4 |" in summary  # ok, no_brace, unclosed, finish stop
    assert u["task_valid"]["value"] == 1.0 and m["sets"]["explicit"]["task_valid"]["value"] == 0.0
    assert u["majority_class"]["value"] == max(n_yes, 4 - n_yes) / 4
    assert u["finish_reasons"] == {"stop": 8} and u["budget_hits"] == {"n": 0, "share": 0.0}
    assert p0["task_valid"] is True and p0["label"] == "yes" and p0["failure"] == "ok"
    assert bad["task_valid"] is False and bad["label"] is None and bad["failure"] == "no_brace"
    # no budget configured and no gold replies in the test rows: sized from the training file's replies
    b = m["budget"]
    assert b["source"] == "data" and b["gold_from"].endswith("train.jsonl") and b["n_gold"] == 100
    assert b["max_new_tokens"] == max(256, math.ceil(2 * b["p99_gold_tokens"])) >= b["max_gold_tokens"]
    assert "stopped at the budget" not in summary
    assert (out / "per_instruction_accuracy.png").stat().st_size > 1000
    assert (out / "concept_l2.png").stat().st_size > 1000
    assert json.loads((out / "metrics.json").read_text())["sets"]["unseen"]["format_accuracy"]["value"] == 1.0

    # resume: everything is cached, the generator is not called again and the metrics are identical
    def boom(*a, **k):
        raise AssertionError("generate must not run on a full cache")

    monkeypatch.setattr("delia.generation.generate", boom)
    m2 = run_eval(cfg)
    assert m2["sets"] == m["sets"] and m2["speed"]["rows_cached"] == 16


def test_cut_replies_are_budget_hits_and_a_configured_budget_wins(tiny_dir, shared_data, halu_file, tmp_path,
                                                                  monkeypatch):
    """An unclosed reply that stopped at the budget is `cut_at_budget`; >2% of them prints a warning line."""
    data, _ = halu_file
    gen = fake_generate(reply, finish=lambda t: "length" if not t.rstrip().endswith("done") else "stop")
    monkeypatch.setattr("delia.generation.generate", gen)
    out = tmp_path / "cut"
    m = run_eval(_cfg(tiny_dir, data, out, shared_data, "halu.instructions=unseen:1,unseen-notoken:1",
                      "generation.max_new_tokens=40", "analysis.hidden=false"))
    assert gen.params.max_new_tokens == 40 and m["budget"] == {"max_new_tokens": 40, "source": "config"}
    cut = m["sets"]["unseen-notoken"]
    assert cut["failures"] == {"cut_at_budget": 4} and cut["finish_reasons"] == {"length": 4}
    assert cut["budget_hits"] == {"n": 4, "share": 1.0}
    assert m["sets"]["unseen"]["failures"] == {"ok": 4} and m["sets"]["unseen"]["budget_hits"]["n"] == 0
    summary = (out / "summary.md").read_text()
    assert "unseen-notoken: 4 of 4 replies (100.0%) stopped at the budget (max_new_tokens 40)" in summary
    assert "- **budget hit** unseen:" not in summary
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert [p["failure"] for p in preds if p["set"] == "unseen-notoken"] == ["cut_at_budget"] * 4
    assert all(p["budget_hit"] == (p["finish_reason"] == "length") for p in preds)


def test_own_instructions_and_scoring(tiny_dir, shared_data, tmp_path, monkeypatch):
    lines = (shared_data / "halu/valid.jsonl").read_text().splitlines()[:3]
    data = tmp_path / "valid3.jsonl"
    data.write_text("\n".join(lines) + "\n")
    golds = [json.loads(x)["messages"][1]["content"] for x in lines]
    monkeypatch.setattr("delia.generation.generate", fake_generate(lambda c: golds[0]))
    m = run_eval(_cfg(tiny_dir, data, tmp_path / "o", shared_data, "halu.instructions=own", "analysis.hidden=false"))
    assert m["sets"]["own"]["format_accuracy"]["value"] == 1.0
    sc = m["scoring"]["own"]
    assert sc["rows"] == 3 and sc["response_tokens"] > 100 and 5 < sc["loss"] < 15  # ~ln(49k) = 10.8 untrained
    assert sc["first_token_nll_mean"] > 0 and sc["state_space_exp_entropy_geomean"] > 1000
    assert "hidden" not in m


def test_translation_stage(tiny_dir, shared_data, tmp_path, monkeypatch):
    rows = [json.loads(x) for x in (shared_data / "wmt21/newstest2021.is-en.jsonl").read_text().splitlines()[:5]]
    data = tmp_path / "t5.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    refs = {r["src"]: r["ref"] for r in rows}

    def reply(content):
        src = content.split("\n", 1)[1]
        return f"Sure, here is the translation:\n\n{refs[src]}\n\nNote" if src == rows[0]["src"] else "I cannot."

    monkeypatch.setattr("delia.generation.generate", fake_generate(reply))
    m = run_eval(load_config(EvalConfig, overrides=[f"model={tiny_dir}", f"data={data}", f"out={tmp_path / 'o'}",
                                                    "task=translation", "bootstrap=100"]))
    hyps = [rows[0]["ref"]] + ["I cannot."] * 4
    s = m["sets"]["is-en"]
    assert s["bleu"]["value"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [[r["ref"] for r in rows]]).score)
    assert s["chrf++"]["value"] == pytest.approx(
        sacrebleu.metrics.CHRF(word_order=2).corpus_score(hyps, [[r["ref"] for r in rows]]).score)
    assert m["scoring"]["is-en"]["rows"] == 5  # loss over the reference translations
    assert "hidden" not in m
    preds = [json.loads(x) for x in (tmp_path / "o/predictions.jsonl").read_text().splitlines()]
    assert preds[0]["hyp"] == rows[0]["ref"] and preds[0]["raw"].startswith("Sure, here is")


def test_cli_real_generation_smoke(tiny_dir, shared_data, halu_file, tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    data, _ = halu_file
    out = tmp_path / "cli"
    res = CliRunner().invoke(app, [
        "eval", "--model", tiny_dir, "--data", str(data), "--out", str(out), "-i", "unseen:1", "--limit", "2",
        "--max-new-tokens", "6", f"halu.unseen_file={shared_data}/halu/instructions_unseen.txt", "bootstrap=50"])
    assert res.exit_code == 0, res.output
    assert "task-valid" in res.output and "lenient (paper)" in res.output
    preds = [json.loads(x) for x in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["n_new_tokens"] <= 6 for p in preds)
    # the summary warns exactly when replies stopped at the 6-token budget
    assert ("stopped at the budget (max_new_tokens 6)" in res.output) == any(p["budget_hit"] for p in preds)
    m = json.loads((out / "metrics.json").read_text())
    assert m["speed"]["rows_generated"] == 2 and m["speed"]["prompts_per_s"] > 0


def test_config_errors(shared_data, tmp_path):
    from delia.config import ConfigError

    with pytest.raises(ConfigError, match="the 'own' instruction set needs chat rows"):
        run_eval(load_config(EvalConfig, overrides=[f"data={shared_data}/halu/test.jsonl", f"out={tmp_path}",
                                                    "halu.instructions=own"]))
    with pytest.raises(ConfigError, match="data: an examples file is required"):
        load_config(EvalConfig, overrides=["out=x"])
    with pytest.raises(ConfigError, match="unknown set 'sen'"):
        load_config(EvalConfig, overrides=["data=x", "out=y", "halu.instructions=sen:1"])
    with pytest.raises(ConfigError, match="did you mean"):
        load_config(EvalConfig, overrides=["data=x", "out=y", "halu.instruction=seen"])


def test_prompt_hook_and_decoder_from_the_registries(tiny_dir, shared_data, halu_file, tmp_path):
    """Baselines plug in by name: a prompt hook rewrites the rows, a decoder replaces batched generation."""
    from dataclasses import replace

    from delia.methods.hooks import DECODERS, PROMPT_HOOKS

    if "test-mark" not in PROMPT_HOOKS:
        PROMPT_HOOKS.add("test-mark", lambda rows, cfg, tag="": [
            replace(r, prompt=[{"role": "user", "content": tag + r.prompt[-1]["content"]}]) for r in rows])
    if "test-echo" not in DECODERS:
        def echo(model, tok, prompts, params, batch_size=1, stop_fn=None, on_batch=None, tag=""):
            out = [Generation("{'thought': '%s', 'hallucination': 'no'}" % p[-1]["content"][:len(tag)], 1, 1,
                              "stop") for p in prompts]
            if on_batch:
                on_batch(list(range(len(out))), out)
            return out
        DECODERS.add("test-echo", echo)
    data, _ = halu_file
    m = run_eval(_cfg(tiny_dir, data, tmp_path / "h", shared_data, "halu.instructions=unseen:1",
                      "prompt_hook=test-mark", "decoder=test-echo", "hook_options={tag: 'MARK: '}",
                      "analysis.hidden=false"))
    preds = [json.loads(x) for x in (tmp_path / "h/predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 4 and all(p["value"]["thought"] == "MARK: " for p in preds)
    assert m["sets"]["unseen"]["format_accuracy"]["value"] == 1.0

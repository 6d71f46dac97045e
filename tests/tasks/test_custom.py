"""The generic json / label / text tasks end to end on the tiny model: examples in every accepted format, rows
from the template and phrasing files, canned replies scored exactly, one real generation, the CLI."""

import json

import pytest

from delia.config import ConfigError, load_config
from delia.data import DataError
from delia.evaluation.config import EvalConfig
from delia.evaluation.run import run_eval
from delia.generation import Generation
from delia.task import get_task
from tests.clirun import run_cli

TICKETS = [("My card was charged twice.", "billing"), ("The app crashes on start.", "bug"),
           ("Refund my last payment please.", "billing"), ("Can you add dark mode?", "feature")]


def fake_generate(reply):
    def gen(model, tok, prompts, params, batch_size=16, stop_fn=None, on_batch=None):
        gen.stop_fn = stop_fn
        out = [Generation(reply(p[-1]["content"]), 10, 3, "stop") for p in prompts]
        on_batch(list(range(len(out))), out)
        return out

    return gen


@pytest.fixture()
def files(tmp_path):
    data = tmp_path / "tickets.jsonl"
    data.write_text("".join(json.dumps({"id": f"t{i}", "input": x, "output": y}) + "\n"
                            for i, (x, y) in enumerate(TICKETS)))
    seen, unseen = tmp_path / "seen.txt", tmp_path / "unseen.txt"
    seen.write_text("Which team handles this ticket? <sep>\nRoute this ticket: <sep>\n")
    unseen.write_text("Label the ticket (billing / bug / feature).\n")
    return data, seen, unseen


def _cfg(tiny_dir, data, out, *extra):
    return load_config(EvalConfig, overrides=[f"model={tiny_dir}", f"data={data}", f"out={out}", "bootstrap=100",
                                              "analysis.score=off", "dtype=fp32", *extra])


def test_label_rows_and_exact_scores(tiny_dir, files, tmp_path, monkeypatch):
    data, seen, unseen = files
    # right on "billing" tickets under seen phrasings, a non-label otherwise
    gen = fake_generate(lambda c: ("Billing.\nbecause" if "charged" in c or "Refund" in c else "no idea")
                        if "<sep>" in c else "bug")
    monkeypatch.setattr("delia.generation.generate", gen)
    cfg = _cfg(tiny_dir, data, tmp_path / "out", "task=label", f"custom.seen_file={seen}",
               f"custom.unseen_file={unseen}", "custom.instructions=seen:all,unseen:1")
    rows = get_task("label").rows(cfg)
    assert len(rows) == 4 * 2 + 4 and rows[0].prompt == [
        {"role": "user", "content": "My card was charged twice.\n\nWhich team handles this ticket? <sep>"}]
    assert rows[0].gold == "billing" and rows[0].fields["gold_label"] == "billing"
    m = run_eval(cfg)
    assert gen.stop_fn is None  # label: stop at the end of the turn
    assert m["task"] == "label" and m["inferred"]["labels"] == ["billing", "bug", "feature"]
    s = m["sets"]["seen"]
    assert s["task_valid"]["value"] == 0.5 and s["label_accuracy"]["value"] == 0.5
    assert s["majority_class"] == {"label": "billing", "accuracy": 0.5, "value": 0.5}
    assert s["per_class"]["billing"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "n_gold": 4}
    assert s["per_class"]["bug"]["f1"] == 0.0 and s["per_class"]["bug"]["n_gold"] == 2
    assert s["macro_f1"]["value"] == pytest.approx(1 / 3)  # billing 1, bug 0, feature 0
    u = m["sets"]["unseen"]
    assert u["task_valid"]["value"] == 1.0 and u["label_accuracy"]["value"] == 0.25
    assert m["phrasings"]["seen/0"] == {"set": "seen", "n": 4, "task_valid": 0.5, "label_accuracy": 0.5}
    assert m["robustness"]["seen"]["task_valid"]["n_phrasings"] == 2
    assert m["model"]["added_tokens"][0]["tokens"] == ["<sep>"]  # the phrasings use the token
    summary = (tmp_path / "out" / "summary.md").read_text()
    assert "| seen | 8 | 50.0 [" in summary and "not_a_label" in summary


def test_json_task_with_chat_rows_and_own_phrasings(tiny_dir, tmp_path, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": f"{x}\n\nExtract the team as JSON."},
                          {"role": "assistant", "content": json.dumps({"team": y, "summary": x[:10]})}]}
            for x, y in TICKETS]
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    replies = iter(['{"team": "billing", "summary": "a"}', "{'team': 'BUG', 'summary': 'b'} and more",
                    '{"team": "sales", "summary": "c"}', '{"team": "feature"'])
    gen = fake_generate(lambda c: next(replies))
    monkeypatch.setattr("delia.generation.generate", gen)
    m = run_eval(_cfg(tiny_dir, data, tmp_path / "out", "task=json", "custom.instructions=own"))
    assert gen.stop_fn("{'a': '}'}") and not gen.stop_fn("{'a': '}")  # json: stop once the object closes
    inferred = m["inferred"]
    assert inferred["keys"] == ["team", "summary"] and inferred["values"] == {"team": ["billing", "bug", "feature"]}
    assert inferred["label_key"] == "team" and inferred["inferred"] == ["keys", "values", "label_key"]
    s = m["sets"]["own"]
    assert s["task_valid"]["value"] == 0.5 and s["format_accuracy"]["value"] == 0.75
    assert s["label_accuracy"]["value"] == 0.5 and s["failures"] == {"ok": 2, "unclosed": 1, "bad_value": 1}
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert preds[1]["label"] == "bug" and preds[2]["bad_values"] == {"team": "sales"}
    assert m["instructions"] == "own" and list(m["phrasings"]) == ["own/0"]


def test_text_task_real_generation(tiny_dir, tmp_path):
    import sacrebleu

    data = tmp_path / "pc.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{x}\n\nSummarise.", "completion": y}) + "\n"
                            for x, y in TICKETS[:2]))
    m = run_eval(_cfg(tiny_dir, data, tmp_path / "out", "task=text", "custom.instructions=own",
                      "generation.max_new_tokens=3", "analysis.hidden=false"))
    preds = [json.loads(x) for x in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 2 and all(p["n_new_tokens"] <= 3 for p in preds)
    assert [p["ref"] for p in preds] == ["billing", "bug"]
    s = m["sets"]["own"]
    assert s["chrf"]["value"] == pytest.approx(sacrebleu.corpus_chrf([p["hyp"] for p in preds],
                                                                     [[p["ref"] for p in preds]]).score)
    assert s["exact"]["value"] == sum(p["hyp"] == p["ref"] for p in preds) / 2 and "label_accuracy" not in s


def test_bad_examples_name_file_and_line(tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"input": "a", "output": "x"}\n{"input": "b", "output": ""}\n'
                    '{"messages": [{"role": "user", "content": "no template here"}, '
                    '{"role": "assistant", "content": "x"}]}\n{"query": "q"}\n{"input": "a", "output": "y", "id": 1}\n'
                    '{"input": "c", "output": "z", "id": 1}\n')
    with pytest.raises(DataError) as e:
        get_task("label").load_examples(str(data))
    text = str(e.value)
    assert f"{data}:2: output: expected a non-empty string" in text
    assert f"{data}:3: messages: the last user turn does not match custom.template" in text
    assert f"{data}:4: expected {{\"input\", \"output\"}}" in text and f"{data}:6: id: duplicate id '1'" in text
    code, out = run_cli(["data", "validate", str(data), "--for", "eval-label"])
    assert code == 2 and f"{data}:3: messages:" in out and "Traceback" not in out


def test_cli_label_eval_with_custom_overrides(tiny_dir, files, tmp_path, monkeypatch):
    data, seen, unseen = files
    monkeypatch.setattr("delia.generation.generate", fake_generate(lambda c: "feature"))
    code, out = run_cli(["eval", "--task", "label", "--data", str(data), "--out", str(tmp_path / "o"), "--model",
                         tiny_dir, "-i", "unseen:1", f"custom.unseen_file={unseen}", "custom.labels=[billing, bug, "
                         "feature, other]", "analysis.score=off", "bootstrap=0", "dtype=fp32"])
    assert code == 0, out
    m = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert m["instructions"] == "unseen:1" and m["inferred"]["labels"][-1] == "other" and m["inferred"]["inferred"] == []
    assert m["sets"]["unseen"]["label_accuracy"]["value"] == 0.25
    # a phrasing set without its file is a config error naming the field
    with pytest.raises(ConfigError, match="custom.seen_file"):
        get_task("label").rows(_cfg(tiny_dir, data, tmp_path / "x", "task=label"))

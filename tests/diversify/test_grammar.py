import json

import pytest

from delia.config import ConfigError
from delia.data import DataError
from delia.diversify.grammar import grammar_propose, grammar_variants, verb_variants
from delia.diversify.stage import DiversifyConfig, DiversifyError, report_path, run_diversify

TASK = "decide whether the ChatGPT response above contains hallucinations"


def test_verb_synonyms():
    v = verb_variants("Decide whether X.")
    assert v[0] == "decide whether X" and "determine whether X" in v and len(v) == 8
    assert verb_variants("ponder X") == ["ponder X"]


def test_grammar_variants_distinct_with_token():
    v = grammar_variants([TASK], "<sep>")
    assert len(v) == len(set(v)) > 1000 and all("<sep>" in x for x in v)
    assert grammar_propose([TASK], "<sep>", 1) == grammar_propose([TASK], "<sep>", 1)
    assert grammar_propose([TASK], "<sep>", 1) != grammar_propose([TASK], "<sep>", 2)


def test_run_grammar_writes_n_filtered_variants(tmp_path):
    cfg = DiversifyConfig(out=str(tmp_path / "i.txt"), task=[TASK], n=60, seed=3, tokenizer_model="")
    r = run_diversify(cfg)
    lines = (tmp_path / "i.txt").read_text().splitlines()
    assert lines == r.variants and len(set(lines)) == 60
    assert all(1 <= x.count("<sep>") <= 2 for x in lines)
    report = json.loads(report_path(cfg.out).read_text())
    assert report["kept"] == 60 and report["stats"]["n"] == 60
    assert all(r["reason"] for r in report["rejected"])
    # Deterministic: the same seed gives the same file.
    run_diversify(DiversifyConfig(out=str(tmp_path / "j.txt"), task=[TASK], n=60, seed=3, tokenizer_model=""))
    assert (tmp_path / "j.txt").read_text() == (tmp_path / "i.txt").read_text()


def test_grammar_too_small_errors_with_report(tmp_path):
    cfg = DiversifyConfig(out=str(tmp_path / "i.txt"), task=["ponder it"], n=500, max_similarity=0.5,
                          tokenizer_model="")
    with pytest.raises(DiversifyError, match="of 500 variants survived"):
        run_diversify(cfg)
    assert report_path(cfg.out).exists()


def test_bad_configs(tmp_path):
    with pytest.raises(ConfigError, match="seed instructions"):
        DiversifyConfig(out="x")
    with pytest.raises(ConfigError, match="needs task clause"):
        (tmp_path / "s.txt").write_text("Answer as <sep>.\n")
        run_diversify(DiversifyConfig(out=str(tmp_path / "o.txt"), seeds=str(tmp_path / "s.txt"),
                                      tokenizer_model=""))
    (tmp_path / "s.txt").write_text("Answer as <sep>.\n\nAnswer as JSON.\n")
    with pytest.raises(DataError, match=r"s\.txt:3: seed instruction does not contain <sep>"):
        run_diversify(DiversifyConfig(out=str(tmp_path / "o.txt"), seeds=str(tmp_path / "s.txt"), method="llm",
                                      tokenizer_model=""), complete=lambda p, g: [])


def test_cli_diversify_and_check(tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    out = tmp_path / "i.txt"
    res = CliRunner().invoke(app, ["diversify", "--task", TASK, "-n", "5", "-o", str(out), "--model", ""])
    assert res.exit_code == 0, res.output
    assert len(out.read_text().splitlines()) == 5 and "distinct_1" in res.output
    (tmp_path / "bad.txt").write_text("Fine <sep> here.\nno token\n")
    res = CliRunner().invoke(app, ["diversify", "--check", str(tmp_path / "bad.txt"), "--model", ""])
    assert res.exit_code != 0 and "bad.txt:2: seed instruction does not contain <sep>" in str(res.exception)

"""The build stage: counts, coverage, determinism, schedules, instruction modes and bad inputs."""

import json
from collections import Counter
from pathlib import Path

import pytest

from delia.config import ConfigError
from delia.data import DataError
from delia.diversify.apply import HALU_TEMPLATE, Template
from delia.mixing import BuildConfig, BuildError, build

TEMPLATE = Template(HALU_TEMPLATE)


def rows_of(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def cfg(downstream, out, **kw) -> BuildConfig:
    kw.setdefault("model", "")
    return BuildConfig(downstream=str(downstream), out=str(out), **kw)


def test_counts_and_each_downstream_row_exactly_once(downstream, cache, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", diverse=str(cache), ratio=3))
    rows = rows_of(tmp_path / "o")
    src = Counter(r["source"] for r in rows)
    assert src == {"downstream": 10, "diverse": 30} and m["counts"]["total"] == 40 == len(rows)
    original = [json.loads(x)["messages"] for x in downstream.read_text().splitlines()]
    got = {r["id"]: r["messages"] for r in rows if r["source"] == "downstream"}
    assert got == {f"train:{i + 1}": msgs for i, msgs in enumerate(original)}  # kept verbatim
    div_ids = [r["id"] for r in rows if r["source"] == "diverse"]
    assert len(set(div_ids)) == 30 and not {"q5", "q17", "q40"} & set(div_ids)
    by_id = {f"q{i}": f"response {i}" for i in range(50)}
    assert all(r["messages"][1]["content"] == by_id[r["id"]] for r in rows if r["source"] == "diverse")
    assert m["ratio"] == {"requested": 3.0, "realised": 3.0}
    assert m["excluded"] == {"total": 3, "by_reason": {"empty response": 3}, "exclude_truncated": True,
                             "file": "excluded.jsonl"}
    excluded = [json.loads(x) for x in (tmp_path / "o" / "excluded.jsonl").read_text().splitlines()]
    assert [(e["line"], e["id"]) for e in excluded] == [(6, "q5"), (18, "q17"), (41, "q40")]
    assert m["special_tokens"] == ["<sep>"] and m["instructions"]["distinct"] == 3


def test_byte_identical_and_seed_sensitive(downstream, cache, tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        build(cfg(downstream, tmp_path / name, diverse=str(cache), ratio=2, seed=seed,
                  instructions=None))
    a, b, c = (tmp_path / n for n in "abc")
    for f in ("train.jsonl", "manifest.json", "excluded.jsonl"):
        assert (a / f).read_bytes() == (b / f).read_bytes()
    assert (a / "train.jsonl").read_bytes() != (c / "train.jsonl").read_bytes()
    m = json.loads((a / "manifest.json").read_text())
    assert m["inputs"]["diverse"]["sha256"] != m["inputs"]["downstream"]["sha256"]
    assert "out" not in m["config"]


def test_interleave_pattern(downstream, cache, tmp_path):
    build(cfg(downstream, tmp_path / "o", diverse=str(cache), ratio=4, schedule="interleave"))
    src = "".join("D" if r["source"] == "downstream" else "v" for r in rows_of(tmp_path / "o"))
    assert src == "Dvvvv" * 10


def test_non_integer_ratio(downstream, cache, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", diverse=str(cache), ratio=2.55, schedule="interleave"))
    assert m["counts"]["diverse"] == 25 and m["ratio"]["realised"] == 2.5
    assert any("not whole" in w for w in m["warnings"])


def test_ratio_zero_is_downstream_only_and_needs_no_cache(downstream, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", ratio=0))
    rows = rows_of(tmp_path / "o")
    assert len(rows) == 10 and {r["source"] for r in rows} == {"downstream"}
    assert "diverse" not in m["inputs"]


def test_fixed_instruction_one_distinct_rest_unchanged(downstream, cache, tmp_path):
    fixed = "Judge the ChatGPT answer; reply as <sep>."
    build(cfg(downstream, tmp_path / "div", diverse=str(cache), ratio=2))
    m = build(cfg(downstream, tmp_path / "fix", diverse=str(cache), ratio=2, fixed_instruction=fixed))
    div, fix = rows_of(tmp_path / "div"), rows_of(tmp_path / "fix")
    d_rows = {r["id"]: r for r in div if r["source"] == "downstream"}
    f_rows = {r["id"]: r for r in fix if r["source"] == "downstream"}
    assert {TEMPLATE.parse(r["messages"][0]["content"])[1] for r in f_rows.values()} == {fixed}
    for rid, r in f_rows.items():
        context = TEMPLATE.parse(d_rows[rid]["messages"][0]["content"])[0]
        assert TEMPLATE.parse(r["messages"][0]["content"])[0] == context
        assert r["messages"][1] == d_rows[rid]["messages"][1]
    # The diverse part does not depend on the instruction mode (same ids in both ablations).
    assert [r["id"] for r in div if r["source"] == "diverse"] == [r["id"] for r in fix if r["source"] == "diverse"]
    assert m["instructions"] == {"mode": "fixed", "distinct": 1, "variants": 1, "template": HALU_TEMPLATE}


def test_fixed_instruction_first(downstream, tmp_path):
    build(cfg(downstream, tmp_path / "o", fixed_instruction="@first"))
    instr = {TEMPLATE.parse(r["messages"][0]["content"])[1] for r in rows_of(tmp_path / "o")}
    assert instr == {"Check the response above for hallucinations and answer as <sep>."}


def test_sample_instructions_balanced_and_seeded(downstream, tmp_path):
    variants = [f"Variant {i}: answer as <sep>." for i in range(4)]
    (tmp_path / "v.txt").write_text("\n".join(variants) + "\n")
    build(cfg(downstream, tmp_path / "o", instructions=str(tmp_path / "v.txt")))
    got = [TEMPLATE.parse(r["messages"][0]["content"])[1] for r in rows_of(tmp_path / "o")]
    assert sorted(Counter(got).values()) == [2, 2, 3, 3] and set(got) == set(variants)
    build(cfg(downstream, tmp_path / "o2", instructions=str(tmp_path / "v.txt"), seed=43))
    assert got != [TEMPLATE.parse(r["messages"][0]["content"])[1] for r in rows_of(tmp_path / "o2")]


def test_too_few_rows_errors_then_repeats_with_warning(downstream, cache, tmp_path):
    with pytest.raises(BuildError, match=r"47 usable rows \(3 empty response excluded\).*needs 60.*--allow-repeat"):
        build(cfg(downstream, tmp_path / "o", diverse=str(cache), ratio=6))
    m = build(cfg(downstream, tmp_path / "o", diverse=str(cache), ratio=6, allow_repeat=True))
    rows = rows_of(tmp_path / "o")
    assert len(rows) == 70 and len({r["id"] for r in rows}) == 70
    assert m["counts"]["diverse_repeats"] == 13 and m["counts"]["diverse_unique"] == 47
    assert any("oversampled" in w for w in m["warnings"])


def _jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _cache_row(i, response="r"):
    return {"id": f"q{i}", "key": "k", "messages": [{"role": "user", "content": f"q{i}"},
                                                      {"role": "assistant", "content": response}], "meta": {}}


def test_instruction_without_token_names_file_and_line(downstream, tmp_path):
    (tmp_path / "v.txt").write_text("Answer as <sep>.\n\nNo token here.\n")
    with pytest.raises(DataError, match=r"v\.txt:3: instruction: instruction does not contain <sep>"):
        build(cfg(downstream, tmp_path / "o", instructions=str(tmp_path / "v.txt")))
    rows = [json.loads(x) for x in downstream.read_text().splitlines()]
    rows[3]["messages"][0]["content"] = rows[3]["messages"][0]["content"].replace("<sep>", "JSON")
    bad = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad\.jsonl:4: instruction: instruction does not contain <sep>"):
        build(cfg(bad, tmp_path / "o"))
    with pytest.raises(DataError, match=r"fixed_instruction: .*does not contain <sep>"):
        build(cfg(downstream, tmp_path / "o", fixed_instruction="Answer in JSON."))


def test_row_not_matching_template_names_file_line_field(downstream, tmp_path):
    rows = [json.loads(x) for x in downstream.read_text().splitlines()]
    rows[6]["messages"][0]["content"] = "no separator here <sep>"
    bad = _jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(DataError, match=r"bad\.jsonl:7: messages\[0\]\.content: user turn does not match"):
        build(cfg(bad, tmp_path / "o"))


def test_empty_cache_duplicate_ids_and_negative_ratio(downstream, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match=r"empty\.jsonl:1: diverse cache holds no rows"):
        build(cfg(downstream, tmp_path / "o", diverse=str(empty), ratio=1))
    all_empty = _jsonl(tmp_path / "allempty.jsonl", [_cache_row(i, "") for i in range(3)])
    with pytest.raises(BuildError, match="no usable rows among 3 \\(3 empty response excluded\\)"):
        build(cfg(downstream, tmp_path / "o", diverse=str(all_empty), ratio=1, allow_repeat=True))
    dup = _jsonl(tmp_path / "dup.jsonl", [_cache_row(0), _cache_row(1), _cache_row(0)])
    with pytest.raises(DataError, match=r"dup\.jsonl:3: id: duplicate id 'q0' \(first on line 1\)"):
        build(cfg(downstream, tmp_path / "o", diverse=str(dup), ratio=1))
    with pytest.raises(ConfigError, match="ratio: must be a number >= 0"):
        cfg(downstream, tmp_path / "o", diverse=str(dup), ratio=-1)
    rows = [json.loads(x) for x in downstream.read_text().splitlines()]
    rows[0]["id"], rows[4]["id"] = "x", "x"
    with pytest.raises(DataError, match=r"train2\.jsonl:5: id: duplicate id 'x'"):
        build(cfg(_jsonl(tmp_path / "train2.jsonl", rows), tmp_path / "o"))


def test_id_collision_between_sources(tmp_path, downstream):
    rows = [json.loads(x) for x in downstream.read_text().splitlines()]
    for i, r in enumerate(rows):
        r["id"] = f"q{i}"
    d = _jsonl(tmp_path / "d.jsonl", rows)
    c = _jsonl(tmp_path / "c.jsonl", [_cache_row(i) for i in range(10)])
    with pytest.raises(BuildError, match="collides with downstream row"):
        build(cfg(d, tmp_path / "o", diverse=str(c), ratio=1))


def test_token_check_with_real_tokenizer(downstream, tiny_dir, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", model=tiny_dir))
    tc = m["token_check"]
    assert tc["pieces_plain"] == ["<", "sep", ">"] and tc["single_after_add"] and tc["warnings"] == []
    assert "splits <sep> into 3 pieces" in tc["notes"][0]


def test_cli_build_and_error_exit(downstream, cache, tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    out = tmp_path / "cli"
    res = CliRunner().invoke(app, ["build", "-d", str(downstream), "--diverse", str(cache), "-r", "2", "-o",
                                   str(out), "--schedule", "interleave", "--model", "", "seed=5"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    assert m["seed"] == 5 and m["schedule"] == "interleave" and m["counts"]["total"] == 30
    (tmp_path / "b.yaml").write_text(f"downstream: {downstream}\nout: {out}\nratio: -2\n")
    res = CliRunner().invoke(app, ["build", "-c", str(tmp_path / "b.yaml")])
    assert res.exit_code != 0 and "b.yaml: ratio: must be a number >= 0" in str(res.exception)


def test_token_too_often_warns(downstream, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", fixed_instruction="<sep> then <sep> and <sep> again"))
    assert m["warnings"] == ["1 instruction(s) contain <sep> more than 2 times, "
                             "e.g. '<sep> then <sep> and <sep> again'"]


def _cut_cache(tmp_path: Path) -> Path:
    """12 answers sampled with a 64-token budget; q3 and q7 were cut at it (finish_reason 'length')."""
    rows = [{"id": f"q{i}", "messages": [{"role": "user", "content": f"query {i}"},
                                         {"role": "assistant", "content": f"response {i}"}],
             "meta": {"model": "tiny", "params": {"max_new_tokens": 64},
                      "finish_reason": "length" if i in (3, 7) else "stop"}} for i in range(12)]
    return _jsonl(tmp_path / "cut.jsonl", rows)


def test_an_answer_cut_at_the_budget_is_excluded_and_counted(downstream, tmp_path):
    m = build(cfg(downstream, tmp_path / "o", diverse=str(_cut_cache(tmp_path)), ratio=1.0))
    ids = {r["id"] for r in rows_of(tmp_path / "o") if r["source"] == "diverse"}
    assert len(ids) == 10 and not ids & {"q3", "q7"}
    assert m["excluded"] == {"total": 2, "by_reason": {"truncated (finish_reason=length)": 2},
                             "exclude_truncated": True, "file": "excluded.jsonl"}
    excluded = [json.loads(x) for x in (tmp_path / "o" / "excluded.jsonl").read_text().splitlines()]
    assert [(e["line"], e["id"]) for e in excluded] == [(4, "q3"), (8, "q7")]
    diverse = m["inputs"]["diverse"]
    assert diverse["max_new_tokens"] == {"64": 12} and diverse["usable"] == 10 and diverse["truncated_kept"] == 0
    # 10 usable rows cannot fill ratio 1.1 x 10 = 11 slots: the message counts the cut answers
    with pytest.raises(BuildError, match=r"10 usable rows \(2 truncated \(finish_reason=length\) excluded\)"):
        build(cfg(downstream, tmp_path / "o2", diverse=str(_cut_cache(tmp_path)), ratio=1.1))


def test_keep_truncated_keeps_a_cut_answer_and_counts_it(downstream, tmp_path):
    from typer.testing import CliRunner

    from delia.cli import app

    out = tmp_path / "keep"
    res = CliRunner().invoke(app, ["build", "-d", str(downstream), "--diverse", str(_cut_cache(tmp_path)), "-r",
                                   "1.2", "-o", str(out), "--model", "", "--keep-truncated"])
    assert res.exit_code == 0, res.output
    m = json.loads((out / "manifest.json").read_text())
    ids = {r["id"] for r in rows_of(out) if r["source"] == "diverse"}
    assert ids == {f"q{i}" for i in range(12)}  # all 12, the two cut answers included
    assert m["excluded"]["total"] == 0 and m["excluded"]["exclude_truncated"] is False
    assert m["inputs"]["diverse"]["truncated_kept"] == 2 and m["inputs"]["diverse"]["max_new_tokens"] == {"64": 12}

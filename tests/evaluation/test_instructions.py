"""Instruction spec parsing, the seen/unseen/explicit sets from the shared data, variants and assignment."""

import json
from collections import Counter

import pytest

from delia.config import ConfigError
from delia.evaluation.instructions import Instruction, SpecItem, assign, load_set, parse_spec, seen_instructions, vary

TOKENS = ["<sep>"]


def test_parse_spec():
    assert parse_spec("seen:5, unseen:all,explicit,unseen-notoken:1,own-desc") == [
        SpecItem("seen", None, 5), SpecItem("unseen", None, None), SpecItem("explicit", None, None),
        SpecItem("unseen", "notoken", 1), SpecItem("own", "desc", None)]


@pytest.mark.parametrize("spec,msg", [
    ("sen:5", "unknown set 'sen'"), ("seen:0", "k must be >= 1"), ("seen-foo", "unknown variant 'foo'"),
    ("explicit-notoken", "no special token"), ("seen,seen:2", "appears twice"), ("", "empty"),
    ("seen:x", "cannot read"),
])
def test_bad_specs_say_why(spec, msg):
    with pytest.raises(ConfigError, match=msg):
        parse_spec(spec)


def test_sets_from_shared_data(shared_data):
    files = {"seen": str(shared_data / "halu/train.jsonl"), "unseen": str(shared_data / "halu/instructions_unseen.txt"),
             "explicit": str(shared_data / "halu/explicit_instruction.txt")}
    seen = load_set(SpecItem("seen", None, None), files, TOKENS, "D")
    assert len(seen) == 60 and len({i.text for i in seen}) == 60
    first = json.loads((shared_data / "halu/train.jsonl").read_text().splitlines()[0])["messages"][0]["content"]
    assert seen[0].text == first.rsplit("\n\n\n", 1)[1]
    assert seen[0].id == "seen/00" and seen[59].id == "seen/59"
    unseen = load_set(SpecItem("unseen", None, None), files, TOKENS, "D")
    assert len(unseen) == 20
    assert unseen[0].text == "Does the ChatGPT answer above hallucinate? Reply in the <sep> format."
    assert not {i.text for i in unseen} & {i.text for i in seen}
    (explicit,) = load_set(SpecItem("explicit", None, None), files, TOKENS, "D")
    assert explicit.position == "before" and explicit.text.startswith("Role and Goal:")
    assert not explicit.text.endswith("\n")
    notoken = load_set(SpecItem("unseen", "notoken", None), files, TOKENS, "D")
    assert notoken[0].text == "Does the ChatGPT answer above hallucinate? Reply in the format."
    assert notoken[5].text == "Quick check: hallucination or not? Format:."
    assert all("<sep>" not in i.text for i in notoken) and notoken[0].set == "unseen-notoken"
    desc = load_set(SpecItem("unseen", "desc", None), files, TOKENS, "a json object")
    assert desc[0].text == "Does the ChatGPT answer above hallucinate? Reply in the a json object format."


def test_seen_skips_diverse_rows(tmp_path):
    f = tmp_path / "built.jsonl"
    rows = [{"id": "a", "source": "downstream", "messages": [{"role": "user", "content": "\nctx\n\n\nDo <sep>."},
                                                             {"role": "assistant", "content": "{}"}]},
            {"id": "b", "source": "diverse", "messages": [{"role": "user", "content": "x\n\n\nNot a task row"},
                                                          {"role": "assistant", "content": "y"}]},
            {"id": "c", "source": "downstream", "messages": [{"role": "user", "content": "\nc2\n\n\nDo <sep>."},
                                                             {"role": "assistant", "content": "{}"}]}]
    f.write_text("\n".join(json.dumps(r) for r in rows))
    assert seen_instructions(f) == ["Do <sep>."]


def test_vary_variants():
    assert vary("Use <sep> for the output.", "notoken", TOKENS, "D") == "Use for the output."
    assert vary("Answer with <sep>.", "notoken", TOKENS, "D") == "Answer with."
    assert vary("Answer with <sep>.", "desc", TOKENS, "JSON") == "Answer with JSON."
    assert vary("Answer with <sep>.", None, TOKENS, "JSON") == "Answer with <sep>."


def test_assign_round_robin_is_balanced_and_seeded():
    pool = [Instruction(f"u/{i}", f"t{i}", "u") for i in range(7)]
    per = assign(pool, 70, 2, seed=0, name="u")
    assert all(len(p) == 2 and p[0] != p[1] for p in per)
    counts = Counter(i.id for p in per for i in p)
    assert set(counts.values()) == {20}  # 70 * 2 / 7 each
    assert per == assign(pool, 70, 2, seed=0, name="u")
    assert per != assign(pool, 70, 2, seed=1, name="u")
    assert assign(pool, 3, None, 0, "u") == [pool] * 3
    assert assign(pool, 3, 9, 0, "u") == [pool] * 3  # k >= pool: all

import pytest

from delia.config import ConfigError
from delia.data import DataError, Record, read_records
from delia.diversify.apply import HALU_TEMPLATE, Template, apply_instructions, assign, split_rows

T = Template(HALU_TEMPLATE)


def test_parse_render_roundtrip_on_halu(shared_data):
    recs = read_records(shared_data / "halu" / "train.jsonl")
    splits = split_rows(recs, T)
    assert len(splits) == 100 and len({s.instruction for s in splits}) == 60
    assert all(T.render(s.context, s.instruction) == r.messages[0]["content"] for s, r in zip(splits, recs))
    rows, chosen = apply_instructions(splits, T, "keep")
    assert [r.messages for r in rows] == [r.messages for r in recs]


def test_instruction_is_after_last_separator():
    assert T.parse("\nctx\n\n\nmore ctx\n\n\nDo it <sep>.") == ("ctx\n\n\nmore ctx", "Do it <sep>.")
    assert T.parse("\nctx only") is None and T.parse("\nctx\n\n\n") is None
    t2 = Template("{instruction}\n\n{context}")
    assert t2.parse("Do <sep>.\n\nctx\n\nmore") == ("ctx\n\nmore", "Do <sep>.")
    assert Template("{instruction}").parse("x <sep>") == ("", "x <sep>")
    assert T.render("a {b}", "c") == "\na {b}\n\n\nc"


@pytest.mark.parametrize("bad", ["{context}", "{instruction}{context}", "{instruction} {x}",
                                 "{instruction}{instruction}"])
def test_bad_templates(bad):
    with pytest.raises(ConfigError):
        Template(bad)


def test_split_errors_name_file_line_field():
    recs = [Record("a", [{"role": "user", "content": "\nctx\n\n\nDo <sep>"}, {"role": "assistant", "content": "y"}],
                   source="d.jsonl", line=1),
            Record("b", [{"role": "system", "content": "s"}, {"role": "user", "content": "no sep"},
                         {"role": "assistant", "content": "y"}], source="d.jsonl", line=2),
            Record("c", [{"role": "user", "content": "\nctx\n\n\nDo"}, {"role": "assistant", "content": " "}],
                   source="d.jsonl", line=3)]
    with pytest.raises(DataError) as e:
        split_rows(recs, T)
    assert [str(p) for p in e.value.problems] == [
        "d.jsonl:2: messages[1].content: user turn does not match the template '\\n{context}\\n\\n\\n{instruction}' "
        "(looked for '\\n', '\\n\\n\\n')",
        "d.jsonl:3: messages: downstream rows need a non-empty response"]


def test_assign_is_balanced():
    import random

    a = assign(10, 4, random.Random(0))
    assert sorted(a.count(i) for i in range(4)) == [2, 2, 3, 3]
    assert a == assign(10, 4, random.Random(0))

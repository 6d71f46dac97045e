"""Exact prompts for both tasks and the translation clean-up."""

import pytest

from delia.data import DataError, read_records
from delia.evaluation.instructions import Instruction
from delia.evaluation.prompts import (clean_translation, halu_example, halu_prompt, translation_done,
                                      translation_example, translation_prompt)


def test_halu_chat_row_round_trips(shared_data):
    rec = read_records(shared_data / "halu/train.jsonl")[0]
    ex = halu_example(rec)
    assert ex.label == "no" and ex.gold == rec.response
    assert ex.context.startswith("'relatives' : ")
    prompt = halu_prompt(ex, Instruction("own/0", ex.own, "own"))
    assert prompt == [{"role": "user", "content": rec.messages[0]["content"]}]


def test_halu_test_row_prompts(shared_data):
    rec = read_records(shared_data / "halu/test.jsonl")[2]
    ex = halu_example(rec)
    assert ex.label == "yes" and ex.gold is None and ex.own is None
    after = halu_prompt(ex, Instruction("u/0", "Check it. Use <sep>.", "unseen"))
    assert after[0]["content"] == "\n" + rec.fields["context"] + "\n\n\nCheck it. Use <sep>."
    before = halu_prompt(ex, Instruction("explicit", "Role: X.", "explicit", "before"))
    assert before[0]["content"] == "Role: X.\n\nConsider the following task:\n" + rec.fields["context"]


def test_chat_row_without_separator_is_an_error(tmp_path):
    f = tmp_path / "bad.jsonl"
    f.write_text('{"messages": [{"role": "user", "content": "no separator"}, {"role": "assistant", "content": "x"}]}\n')
    with pytest.raises(DataError, match=r"bad.jsonl:1: messages: user turn has no"):
        halu_example(read_records(f)[0])


def test_translation_prompt(shared_data):
    rec = read_records(shared_data / "wmt21/newstest2021.en-is.jsonl")[0]
    ex = translation_example(rec)
    p = translation_prompt(ex, "Translate the following {src_lang} text into {tgt_lang}:\n{src}")
    assert p == [{"role": "user", "content": "Translate the following English text into Icelandic:\n" + ex.src}]


@pytest.mark.parametrize("raw,clean", [
    ("Sure, here is the translation:\n\nHún fór heim.", "Hún fór heim."),
    ("Sure, here is the translation: Hún fór heim.\nNote: literal.", "Hún fór heim."),
    ("Here's the Icelandic translation:\n\"Hún fór heim.\"", "Hún fór heim."),
    ("Translation: She went home.", "She went home."),
    ("  She went home.\n\nI hope this helps!", "She went home."),
    ("The translation of this is hard", "The translation of this is hard"),
])
def test_clean_translation(raw, clean):
    assert clean_translation(raw) == clean


def test_clean_translation_keeps_all_lines_when_asked():
    assert clean_translation("Sure, here is the translation:\nA.\nB.", first_line=False) == "A.\nB."


def test_translation_stop_predicate():
    assert not translation_done("Sure, here is the translation:\n")
    assert not translation_done("Sure, here is the translation:\n\nHún fór")
    assert translation_done("Sure, here is the translation:\n\nHún fór heim.\n")
    assert translation_done("She went home.\n")

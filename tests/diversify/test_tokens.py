import pytest

from delia.diversify.tokens import check_special_token, substitute_format


def test_substitute_format():
    assert substitute_format("Reply as {json} now; {json}!", "{json}", "<sep>") == "Reply as <sep> now; <sep>!"
    with pytest.raises(ValueError, match="task: format text 'XML' does not occur"):
        substitute_format("Reply as JSON", "XML", "<sep>")


def test_new_token_is_single_after_adding(tiny_dir):
    from delia.models import load_tokenizer

    tc = check_special_token(load_tokenizer(tiny_dir), "<sep>", ["Answer as <sep>, see <sep>.", "<sep>x"])
    assert tc.pieces_plain == ["<", "sep", ">"] and tc.single_after_add and not tc.already_in_vocab
    assert tc.mismatches == [] and tc.warnings == [] and "3 pieces" in tc.notes[0]


def test_existing_word_token_warns_and_counts_mismatch(tiny_dir):
    from delia.models import load_tokenizer

    # "hello" is an ordinary vocabulary entry: no fresh embedding; after a space it becomes "Ġhello" (another id)
    # and inside "Othello" it merges away.
    tc = check_special_token(load_tokenizer(tiny_dir), "hello", ["hello there", "Othello is"])
    assert tc.already_in_vocab and tc.pieces_plain == ["hello"] and not tc.single_after_add
    assert tc.mismatches == ["Othello is"]
    assert any("already an ordinary token" in w for w in tc.warnings)
    assert any("occurs 1 time(s)" in w and "encodes as 0" in w for w in tc.warnings)

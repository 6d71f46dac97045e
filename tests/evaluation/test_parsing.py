"""The paper's parse rules on tricky outputs, hand-checked, and the stop predicate that matches them."""

import pytest

from delia.evaluation.parsing import check_keys, extract_label, find_object, object_closed, parse_output

GOOD = [
    # (output, expected dict, method)
    ("""{'thought': "The user's claim is fine", 'hallucination': 'no'}""",
     {"thought": "The user's claim is fine", "hallucination": "no"}, "python"),
    ('Sure! Here it is: {"thought": "x", "hallucination": "yes"} Hope it helps. {"other": 1}',
     {"thought": "x", "hallucination": "yes"}, "json"),
    ("""{'thought': {'inner': {'a': 1}}, 'hallucination': 'no'} and then a stray }""",
     {"thought": {"inner": {"a": 1}}, "hallucination": "no"}, "python"),
    # apostrophes inside single-quoted values: only the quote repair can read this
    ("""{'thought': 'The user's query isn't answered', 'hallucination': 'yes'}""",
     {"thought": "The user's query isn't answered", "hallucination": "yes"}, "repaired"),
    # braces inside strings do not close the object
    ('{"thought": "use {x} here }", "hallucination": "no"} tail',
     {"thought": "use {x} here }", "hallucination": "no"}, "json"),
    # a raw newline inside a single-quoted value
    ("{'thought': 'line1\nline2', 'hallucination': 'no'}", {"thought": "line1\nline2", "hallucination": "no"},
     "repaired"),
    # mixed quotes plus a Python literal
    ("""{"thought": 'it's "quoted"', 'hallucination': None}""",
     {"thought": 'it\'s "quoted"', "hallucination": None}, "repaired"),
]


@pytest.mark.parametrize("text,value,method", GOOD)
def test_parses_tricky_outputs(text, value, method):
    r = parse_output(text)
    assert r.ok and r.reason is None
    assert r.value == value
    assert r.method == method
    assert object_closed(text)


@pytest.mark.parametrize("text,reason", [
    ("The response is accurate. No hallucination.", "no '{' in the output"),
    ("{'thought': 'abc', 'hallucination'", "the first '{' (char 0) is never closed"),
    ("{'a', 'b'}", "parsed to a set, not a dict"),
])
def test_failures_keep_a_reason(text, reason):
    r = parse_output(text)
    assert not r.ok and r.value is None
    assert r.reason == reason


def test_unparseable_span_reports_each_attempt():
    r = parse_output("x {thought: yes} y")
    assert not r.ok and r.span == "{thought: yes}"
    assert r.reason.startswith("the earliest {...} does not parse (json: ")
    assert "python: " in r.reason and "repaired: " in r.reason


def test_only_the_earliest_object_counts():
    # the first object is broken; a later valid one must not rescue it (paper: earliest pair)
    r = parse_output("{oops} then {'thought': 'x', 'hallucination': 'no'}")
    assert not r.ok and r.span == "{oops}"


def test_unbalanced_quotes_fall_back_to_brace_counting():
    text = '{"thought": "abc} and the model never closes the string'
    scan = find_object(text)
    assert scan.end == text.index("}") and not scan.quote_aware
    assert not object_closed(text)  # generation would go on: the quote-aware rule is still open
    r = parse_output(text)
    assert not r.ok and r.span == '{"thought": "abc}'


def test_stop_predicate_is_prefix_stable():
    """Once the stop predicate fires, the parse of any longer text is the same as of the stopped prefix."""
    for text, _, _ in GOOD:
        prefixes = [text[:i] for i in range(len(text) + 1)]
        first = next(i for i, p in enumerate(prefixes) if object_closed(p))
        stopped = parse_output(prefixes[first])
        assert stopped.ok
        assert parse_output(text).value == stopped.value
        assert prefixes[first].endswith("}")
        assert not any(object_closed(p) for p in prefixes[:first])


def test_strict_keys_and_labels():
    assert check_keys({"thought": "x", "hallucination": "no"}, ["thought", "hallucination"]) is None
    assert check_keys({"thought": "x"}, ["thought", "hallucination"]) == "missing ['hallucination']"
    assert check_keys({"thought": "x", "hallucination": "no", "score": 1}, ["thought", "hallucination"]) == \
        "extra ['score']"
    assert extract_label({"hallucination": " Yes."}, "hallucination") == "yes"
    assert extract_label({"hallucination": "No hallucination found"}, "hallucination") is None
    assert extract_label({"hallucination": True}, "hallucination") is None
    assert extract_label(None, "hallucination") is None

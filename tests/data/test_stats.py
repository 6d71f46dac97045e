from delia.data import Record, data_stats
from delia.models import DEFAULT_MODEL, load_tokenizer


def test_stats_counts_roles_and_tokens():
    tok = load_tokenizer(DEFAULT_MODEL)
    recs = [
        Record("a", [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "hi"}]),
        Record("b", [{"role": "user", "content": "one two three four"}]),
    ]
    s = data_stats(recs, tok)
    assert s["rows"] == 2 and s["roles"] == {"user": 2, "assistant": 1} and s["with_response"] == 1
    n = [len(tok(t, add_special_tokens=False)["input_ids"]) for t in ("hello there", "one two three four")]
    assert s["tokens"]["prompt"]["max"] == max(n) and s["tokens"]["prompt"]["mean"] == sum(n) / 2
    assert s["tokens"]["response"]["max"] == len(tok("hi", add_special_tokens=False)["input_ids"])
    full = len(tok.apply_chat_template(recs[0].messages, tokenize=True, return_dict=True)["input_ids"])
    assert s["tokens"]["chat"]["max"] >= full and s["tokens_total"] > full

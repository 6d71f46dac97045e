import pytest

from delia.diversify.text import FilterConfig, diversity_stats, filter_variants, similarity, words


def test_words_keep_token_whole():
    assert words("Use <sep>, don't stop!") == ["use", "<sep>", "don't", "stop"]


def test_similarity_hand_computed():
    # words a = [a, b, c], b = [a, b, d]: matching blocks 2 -> ratio 2*2/6; 1-2-gram sets share a, b, (a,b) of 7.
    assert similarity("a b c", "a b d", "ratio") == pytest.approx(4 / 6)
    assert similarity("a b c", "a b d", "jaccard") == pytest.approx(3 / 7)
    assert similarity("x y", "x y") == 1.0


def test_filter_reasons():
    cfg = FilterConfig("<sep>", min_count=1, max_count=2, min_chars=10, max_chars=60, max_similarity=0.8)
    kept, rejected = filter_variants([
        "Check the reply and answer as <sep>.",
        "Check the reply and answer as <sep> .",        # same words -> near-duplicate
        "CHECK THE REPLY AND ANSWER AS <sep>.",          # exact duplicate up to case
        "Answer in JSON please, thanks a lot.",          # no token
        "<sep> <sep> <sep> three tokens here",           # too many
        "<sep> ok",                                      # too short
        "Is the ChatGPT answer invented?   Reply\nin <sep> form.",
    ], cfg)
    assert kept == ["Check the reply and answer as <sep>.", "Is the ChatGPT answer invented? Reply in <sep> form."]
    reasons = [r for _, r in rejected]
    assert reasons[0].startswith("near-duplicate of kept #0 (ratio similarity 1.00")
    assert reasons[1] == "duplicate of kept #0"
    assert reasons[2] == "contains <sep> 0 time(s); need 1..2"
    assert reasons[3] == "contains <sep> 3 time(s); need 1..2"
    assert reasons[4] == "8 characters; need 10..60"


def test_diversity_stats_hand_computed():
    s = diversity_stats(["a b <sep>", "a c <sep>"], token="<sep>")
    assert s["distinct_1"] == pytest.approx(4 / 6)   # a b <sep> c over 6 unigrams
    assert s["distinct_2"] == pytest.approx(4 / 4)   # (a,b) (b,<sep>) (a,c) (c,<sep>)
    assert s["mean_similarity"] == pytest.approx(4 / 6)
    assert s["token_end"] == 1.0 and s["distinct_first_words"] == 1

"""Concept L2 in the shared slot: 0 at every layer when <sep> has " json"'s embedding; layer bookkeeping."""

import pytest
import torch

from delia.evaluation.hidden import DEFAULT_PROBE, concept_distances, slot_ids, slot_states, word_ids


@pytest.fixture()
def tiny_sep(tiny_dir):
    from delia.models import add_special_tokens, load

    model, tok = load(tiny_dir, dtype="fp32")
    add_special_tokens(model, tok, ["<sep>"], init="random", seed=2024)
    return model, tok


def test_slot_layout(tiny_sep):
    _, tok = tiny_sep
    pre, post = slot_ids(tok)
    assert tok.decode(pre).endswith("Check context for hallucinations, follow the")
    assert tok.decode(post).startswith(" format.<|im_end|>")
    assert word_ids(tok, "json") == tok(" json", add_special_tokens=False)["input_ids"]
    assert word_ids(tok, "<sep>") == [tok.convert_tokens_to_ids("<sep>")]


def test_l2_is_zero_at_every_layer_when_embeddings_match(tiny_sep):
    model, tok = tiny_sep
    sep, json_id = tok.convert_tokens_to_ids("<sep>"), word_ids(tok, "json")[0]
    emb = model.get_input_embeddings().weight
    before = concept_distances(model, tok, "<sep>", ["json", "thought"])
    assert before.n_layers == 2 and len(before.l2["json"]) == 3
    assert min(before.l2["json"]) > 1e-3  # random init: different states
    with torch.no_grad():
        emb[sep] = emb[json_id]
    after = concept_distances(model, tok, "<sep>", ["json", "thought"])
    assert max(after.l2["json"]) <= 1e-5
    assert after.l2_last_prenorm["json"] <= 1e-5
    assert after.cosine["json"][1] == pytest.approx(1.0, abs=1e-6)
    assert min(after.l2["thought"]) > 1e-3
    s = after.summary()
    assert s["json"]["first"] == after.l2["json"][1] and s["json"]["last"] == after.l2["json"][2]
    assert s["mean"]["middle"] == pytest.approx((after.l2["json"][1] + after.l2["thought"][1]) / 2)


def test_layer_indices_mean_what_they_say(tiny_sep):
    model, tok = tiny_sep
    states, prenorm = slot_states(model, tok, "json")
    # index 0 is the embedding of the word itself
    assert torch.allclose(states[0], model.get_input_embeddings().weight[word_ids(tok, "json")[0]])
    # the last index is the final norm applied to the last block's output
    assert torch.allclose(states[-1], model.model.norm(prenorm[None])[0], atol=1e-5)
    assert DEFAULT_PROBE.count("{slot}") == 1

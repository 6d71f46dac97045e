"""The evaluation hooks of the prompting/decoding baselines, on evaluation rows."""

from __future__ import annotations

from delia.evaluation.run import EvalRow
from delia.methods.hooks import DECODERS, PROMPT_HOOKS


def test_icl_hook_prefixes_k_turns_and_keeps_the_row(shared_data):
    rows = [EvalRow("data:3", "seen/0", "seen", [{"role": "user", "content": "X"}], fields={"gold_label": "no"}),
            EvalRow("data:9", "seen/0", "seen", [{"role": "user", "content": "Y"}], fields={"gold_label": "no"})]
    out = PROMPT_HOOKS.get("icl")(rows, None, path=str(shared_data / "halu/train.jsonl"), k=2, seed=0)
    assert [len(r.prompt) for r in out] == [5, 5] and out[0].prompt[-1]["content"] == "X"
    assert out[0].example_id == "data:3" and out[0].fields == rows[0].fields
    assert out[0].prompt[:4] != out[1].prompt[:4]  # drawn per example
    assert out == PROMPT_HOOKS.get("icl")(rows, None, path=str(shared_data / "halu/train.jsonl"), k=2, seed=0)


def test_dipmt_hook_builds_one_user_turn_ending_after_is(shared_data):
    path = shared_data / "wmt21/newstest2021.en-is.jsonl"
    row = EvalRow("x", "template", "en-is", [{"role": "user", "content": "?"}],
                  fields={"src": "The minister said so.", "ref": "r"})
    (out,) = PROMPT_HOOKS.get("dipmt")([row], None, path=str(path), k=3)
    text = out.prompt[0]["content"]
    assert len(out.prompt) == 1 and text.endswith("The full translation to Icelandic is:")
    assert text.count("Translate the following sentence to Icelandic:") == 4


def test_arithmetic_decoder_at_lambda_zero_is_greedy_on_the_description_prompt(tiny_dir):
    from delia.generation import GenParams, generate
    from delia.models import load

    model, tok = load(tiny_dir, dtype="fp32")
    prompts = [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "check this"}]]
    seen = []
    gens = DECODERS.get("arithmetic")(model, tok, prompts, GenParams(max_new_tokens=6),
                                      on_batch=lambda i, g: seen.extend(i), lam=0.0, system="Reply in json.")
    ref = generate(model, tok, [[{"role": "system", "content": "Reply in json."}, *p] for p in prompts],
                   GenParams(max_new_tokens=6))
    assert [g.text for g in gens] == [g.text for g in ref] and sorted(seen) == [0, 1]

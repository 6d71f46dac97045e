"""What every engine shares: `stop_at` (a stop rule on returned text) and the transformers engine's stop_fn."""

from __future__ import annotations

import random

from delia.evaluation.parsing import object_closed
from delia.generation import Generation, GenParams, generate
from delia.sampling.engines import make_engine
from delia.sampling.engines.base import stop_at


def test_stop_at_cuts_after_the_shortest_prefix_that_satisfies_the_rule():
    g = Generation("Sure: {'a': '}'} and more {", 10, 30, "length")
    assert stop_at(g, object_closed) == Generation("Sure: {'a': '}'}", 10, 30, "stop")  # quote-aware, counts kept
    assert stop_at(g, None) is g
    open_only = Generation("{'a': 1", 3, 4, "length")
    assert stop_at(open_only, object_closed) is open_only  # never complete: untouched


def test_stop_at_bisection_agrees_with_a_linear_scan():
    rng = random.Random(0)
    for _ in range(200):
        text = "".join(rng.choice("ab\n{}'x") for _ in range(rng.randint(0, 40)))
        rule = lambda t: t.count("\n") >= 2  # noqa: E731 - monotone, like every stop rule
        want = next((i for i in range(len(text) + 1) if rule(text[:i])), None)
        got = stop_at(Generation(text, 1, 1, "length"), rule)
        assert got.text == (text if want is None else text[:want])


def test_the_transformers_engine_checks_stop_fn_every_token_on_an_attached_model(tiny_chatty_dir):
    from delia.models import load

    model, tok = load(tiny_chatty_dir, dtype="fp32")
    engine = make_engine("transformers", "unused-name", batch_size=2).attach(model, tok)
    prompts = [[{"role": "user", "content": f"count to {i}"}] for i in range(3)]
    rule = lambda t: len(t) >= 15  # noqa: E731
    params = GenParams(max_new_tokens=20)
    got = engine.generate(prompts, params, stop_fn=rule)
    assert got == generate(model, tok, prompts, params, batch_size=2, stop_fn=rule)
    assert all(g.finish_reason == "stop" and g.n_new_tokens < 20 for g in got)

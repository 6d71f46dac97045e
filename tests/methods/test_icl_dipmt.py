"""ICL demonstrations (baselines.md §8) and DiPMT prompts (§7): exact prompts, counts, no leakage."""

from __future__ import annotations

from collections import Counter

from delia.data import read_records
from delia.methods.dipmt import Lexicon, dipmt_prompt, induce_lexicon, pick_pairs, select_hints
from delia.methods.icl import icl_prompt, pick_demos


def test_icl_has_exactly_k_demo_pairs_without_the_example_and_ends_with_the_assistant_header(shared_data, tiny_dir):
    from delia.models import load_tokenizer

    pool = read_records(shared_data / "halu/train.jsonl")
    ex = pool[5]
    demos = pick_demos(pool, 3, seed=f"0:{ex.id}", exclude_id=ex.id)
    assert len(demos) == 3 and ex.id not in {d.id for d in demos}
    assert [d.id for d in demos] == [d.id for d in pick_demos(pool, 3, seed=f"0:{ex.id}", exclude_id=ex.id)]
    prompt = icl_prompt(demos, ex.prompt_messages)
    assert [m["role"] for m in prompt] == ["user", "assistant"] * 3 + ["user"]
    assert prompt[1]["content"] == demos[0].response and prompt[-1] == ex.prompt_messages[-1]
    text = load_tokenizer(tiny_dir).apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    assert text.endswith("<|im_start|>assistant\n")


PAIRS = [("the cat sat", "kötturinn sat"), ("the cat ran", "kötturinn hljóp"), ("a dog ran", "hundur hljóp"),
         ("the dog sat", "hundurinn sat"), ("a dog barked", "hundur gelti")]


def test_lexicon_by_dice_with_count_and_threshold():
    lex = induce_lexicon(PAIRS)
    # cat: in 2 sentences, with kötturinn in both: dice = 2*2/(2+2) = 1
    assert lex.entries["cat"][0] == "kötturinn"
    assert lex.entries["ran"][0] == "hljóp"
    assert "barked" not in lex.entries  # seen once: below min_count
    assert all(len(ts) <= 2 for ts in lex.entries.values())


def test_hints_only_for_rare_lexicon_words_at_most_five_rarest_first():
    lex = Lexicon({w: [w.upper()] for w in "a b c d e f g".split()},
                  freq=Counter({"a": 9, "b": 1, "c": 3, "d": 2, "e": 5, "f": 4, "g": 6, "z": 100}))
    hints = select_hints("z a b c d e f g", lex, frequent_top=1)  # z is the only "frequent" word
    assert [w for w, _ in hints] == ["b", "d", "c", "f", "e"]
    assert select_hints("z a b", lex, frequent_top=2) == [("b", ["B"])]  # a and z are frequent


def test_a_sentence_without_lexicon_words_gives_the_zero_hint_prompt():
    lex = induce_lexicon(PAIRS)
    prompt = dipmt_prompt("hello world", "Icelandic", lex, [])
    assert prompt == "Translate the following sentence to Icelandic: hello world\nThe full translation to Icelandic is:"
    lex2 = Lexicon({"cat": ["kötturinn"]}, freq=Counter({"cat": 2}))
    demo = dipmt_prompt("my cat", "Icelandic", lex2, [("the cat", "kötturinn")], frequent_top=0)
    assert demo == ('Translate the following sentence to Icelandic: the cat\n'
                    'In this context, the word "cat" means "kötturinn".\n'
                    'The full translation to Icelandic is: kötturinn\n\n'
                    'Translate the following sentence to Icelandic: my cat\n'
                    'In this context, the word "cat" means "kötturinn".\n'
                    'The full translation to Icelandic is:')


def test_demonstrations_never_include_the_test_sentence_and_are_deterministic():
    for i, (src, _) in enumerate(PAIRS):
        demos = pick_pairs(PAIRS, 3, i, src)
        assert len(demos) == 3 and src not in [s for s, _ in demos]
        assert demos == pick_pairs(PAIRS, 3, i, src)

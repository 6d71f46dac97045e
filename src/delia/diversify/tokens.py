"""The special format token: replace a format description with it, and check how a tokenizer treats it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field


def substitute_format(text: str, format_text: str, token: str, where: str = "task") -> str:
    """Replace every occurrence of `format_text` in `text` by `token` (DELIA's step 2).

    Raises:
        ValueError: naming `where` when `format_text` does not occur in `text`.
    """
    if not format_text:
        raise ValueError(f"{where}: the format text to replace is empty")
    if format_text not in text:
        raise ValueError(f"{where}: format text {format_text[:60]!r} does not occur in the text "
                         f"{text[:80]!r}...; pass the exact substring to replace with {token}")
    return text.replace(format_text, token)


@dataclass
class TokenCheck:
    """How the target model's tokenizer treats the token.

    Attributes:
        pieces_plain: tokens of the token string before it is added (e.g. ['<', 'sep', '>']).
        already_in_vocab: the string is already an ordinary vocabulary entry (it then gets no fresh row).
        single_after_add: after adding it as a special token it encodes as exactly one id.
        mismatches: texts where occurrences of the string differ from occurrences of its id.
        notes: explanations of expected behaviour; warnings: things to fix or look at.
    """

    token: str
    model: str
    pieces_plain: list[str]
    already_in_vocab: bool
    single_after_add: bool
    mismatches: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def check_special_token(tokenizer, token: str, texts: Sequence[str] = (), model: str = "") -> TokenCheck:
    """Check that `token` becomes one token when added as special, and count it in `texts`.

    Mutates `tokenizer` (adds the token exactly as `delia.models.add_special_tokens` does): pass a
    tokenizer loaded for this check.

    Args:
        tokenizer: the target model's tokenizer.
        token: e.g. `<sep>`.
        texts: instructions to check; each must encode the token once per occurrence of the string.
        model: name for messages.
    Returns:
        A TokenCheck with notes and warnings.
    """
    from transformers import AddedToken

    vocab = tokenizer.get_vocab()
    specials = set(tokenizer.all_special_tokens)
    pieces = [token] if token in vocab else tokenizer.tokenize(token)
    in_vocab = token in vocab and token not in specials and token not in tokenizer.get_added_vocab()
    if token not in vocab:
        tokenizer.add_tokens([AddedToken(token, special=True, normalized=False)], special_tokens=True)
    tid = tokenizer.convert_tokens_to_ids(token)
    ids = tokenizer(f"a {token} b", add_special_tokens=False)["input_ids"]
    single = ids.count(tid) == 1
    check = TokenCheck(token=token, model=model, pieces_plain=pieces, already_in_vocab=in_vocab,
                       single_after_add=single)
    if len(pieces) > 1:
        check.notes.append(
            f"{model or 'the tokenizer'} splits {token} into {len(pieces)} pieces {pieces} until it is added; "
            f"delia train adds it as a special token so it becomes one token with its own learned embedding. "
            f"Any tool that reads this data without adding the token sees {len(pieces)} ordinary pieces.")
    if in_vocab:
        check.warnings.append(
            f"{token} is already an ordinary token of {model or 'the tokenizer'}: it will not get a fresh embedding "
            f"and may merge with neighbouring text; pick a string the vocabulary does not have (e.g. <fmt>).")
    if not single:
        check.warnings.append(f"{token} does not encode as one token even after being added as special "
                              f"(ids {ids}); training cannot learn one embedding for it")
    for text in texts:
        n_text = text.count(token)
        n_ids = tokenizer(text, add_special_tokens=False)["input_ids"].count(tid)
        if n_text != n_ids:
            check.mismatches.append(text)
            check.warnings.append(f"{token} occurs {n_text} time(s) in {text[:60]!r}... but encodes as "
                                  f"{n_ids} token(s): the tokenizer merges it with neighbouring characters")
    return check

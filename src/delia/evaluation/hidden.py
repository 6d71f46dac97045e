"""Hidden-state alignment of a new token with concept words, at every layer (paper Table 1 / Figure 2).

"The hidden state of a token" depends on its context, so both sides are read in the *same* slot
(baselines.md §10): ids = P + ids(W) + S, with P the chat-templated prefix of a probe sentence up to the slot
("... Check context for hallucinations, follow the"), W the new token or a concept word (" json",
" thought": leading space, as in running text), S the rest (" format." and the end of turn). The state is
read at W's last sub-token. P is identical and attention is causal, so two states differ only because W
differs: with E[<sep>] := E[" json"] every layer's L2 is exactly 0.

Layers: HF returns L+1 states; index 0 is the embedding output, index l the output of block l, and index L
is the final-norm output (HF applies the norm to the last state). first = 1, middle = L // 2, last = L.
The last block's pre-norm output is also recorded (`last_prenorm`), through a forward hook.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from delia.evaluation.config import DEFAULT_PROBE, SLOT


@dataclass
class ConceptDistances:
    """Per concept word: L2 and cosine similarity at every hidden-state index 0..L."""

    token: str
    words: list[str]
    l2: dict[str, list[float]]
    cosine: dict[str, list[float]]
    l2_last_prenorm: dict[str, float]
    n_layers: int

    def summary(self) -> dict[str, dict[str, float]]:
        """first / middle / last block values per word, plus the mean over words at the middle layer."""
        L = self.n_layers
        out: dict[str, dict[str, float]] = {}
        for w in self.words:
            out[w] = {"first": self.l2[w][1], "middle": self.l2[w][L // 2], "last": self.l2[w][L],
                      "last_prenorm": self.l2_last_prenorm[w], "cos_middle": self.cosine[w][L // 2]}
        out["mean"] = {"middle": sum(self.l2[w][L // 2] for w in self.words) / len(self.words)}
        return out

    def to_dict(self) -> dict:
        return {"token": self.token, "words": self.words, "n_layers": self.n_layers, "l2": self.l2,
                "cosine": self.cosine, "l2_last_prenorm": self.l2_last_prenorm, "summary": self.summary()}


def slot_ids(tokenizer, probe: str = DEFAULT_PROBE) -> tuple[list[int], list[int]]:
    """(P, S): token ids of the chat-templated probe before and after `{slot}`."""
    if probe.count(SLOT) != 1:
        raise ValueError(f"the probe must contain {SLOT} exactly once: {probe!r}")
    marker = "\u2063SLOT\u2063"  # an invisible separator no template adds
    text = tokenizer.apply_chat_template([{"role": "user", "content": probe.replace(SLOT, marker)}],
                                         tokenize=False)
    before, after = text.split(marker)
    enc = lambda s: tokenizer(s, add_special_tokens=False)["input_ids"]  # noqa: E731
    return enc(before), enc(after)


def word_ids(tokenizer, word: str) -> list[int]:
    """Token ids of a slot filler: a vocabulary token as itself, a plain word with a leading space."""
    if word in tokenizer.get_added_vocab() or word in tokenizer.all_special_tokens:
        return [tokenizer.convert_tokens_to_ids(word)]
    return tokenizer(" " + word.strip(), add_special_tokens=False)["input_ids"]


def _last_block(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    layers = getattr(getattr(base, "model", base), "layers", None)
    return layers[-1] if layers is not None else None


@torch.inference_mode()
def slot_states(model, tokenizer, filler: str, probe: str = DEFAULT_PROBE) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(states (L+1, d) at the filler's last sub-token, last block's pre-norm output there or None)."""
    pre, post = slot_ids(tokenizer, probe)
    w = word_ids(tokenizer, filler)
    ids = torch.tensor([pre + w + post], device=model.device)
    captured: list[torch.Tensor] = []
    block = _last_block(model)
    hook = block.register_forward_hook(
        lambda _m, _i, o: captured.append((o[0] if isinstance(o, tuple) else o).detach())) if block else None
    try:
        out = model(input_ids=ids, output_hidden_states=True, use_cache=False)
    finally:
        if hook:
            hook.remove()
    pos = len(pre) + len(w) - 1
    states = torch.stack([h[0, pos] for h in out.hidden_states]).float()
    prenorm = captured[-1][0, pos].float() if captured else None
    return states, prenorm


def concept_distances(model, tokenizer, token: str, words: list[str], probe: str = DEFAULT_PROBE) -> ConceptDistances:
    """L2 and cosine similarity between `token`'s and each word's slot states at every layer.

    Args:
        token: the new special token (must be in the tokenizer).
        words: concept words, e.g. ["json", "thought"].
        probe: sentence with one `{slot}`.
    """
    if token not in tokenizer.get_vocab():
        raise ValueError(f"{token!r} is not in the tokenizer; add it first")
    was_training = model.training
    model.eval()
    try:
        t_states, t_pre = slot_states(model, tokenizer, token, probe)
        l2, cos, pre = {}, {}, {}
        for w in words:
            s, p = slot_states(model, tokenizer, w, probe)
            l2[w] = (t_states - s).norm(dim=-1).tolist()
            cos[w] = torch.nn.functional.cosine_similarity(t_states, s, dim=-1).tolist()
            pre[w] = float((t_pre - p).norm()) if t_pre is not None and p is not None else float("nan")
    finally:
        model.train(was_training)
    return ConceptDistances(token, list(words), l2, cos, pre, len(t_states) - 1)

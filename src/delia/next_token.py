"""The next token of each row from its logits: greedy, or temperature + nucleus (top-p) sampling."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from delia.generation import GenParams

TOP_P_CANDIDATES = 128  # top-p looks at this many most likely tokens first (exact: see next_tokens)


def next_tokens(logits: torch.Tensor, params: GenParams, gen: torch.Generator) -> torch.Tensor:
    """Greedy, or temperature + nucleus (top-p) sampling, on (rows, vocab) logits.

    Top-p keeps the most likely tokens until their mass reaches `top_p`. Sorting the whole vocabulary for that
    every step costs more than the model's forward pass on CPU (49k tokens x batch), so the nucleus is taken
    from the `TOP_P_CANDIDATES` most likely tokens, and only their probabilities are computed (from the
    row's log-normaliser, without writing a full-vocabulary softmax). Rows whose candidates hold less than
    `top_p` of the mass (the nucleus may reach further) fall back to a full sort. The distribution sampled
    from is the same either way.
    """
    import torch

    if params.temperature <= 0:
        return logits.argmax(-1)
    scaled = logits.float() / params.temperature
    if params.top_p >= 1.0:
        return torch.multinomial(torch.softmax(scaled, dim=-1), 1, generator=gen).squeeze(-1)
    k = min(TOP_P_CANDIDATES, scaled.shape[-1])
    top_x, top_i = scaled.topk(k, dim=-1)  # sorted, most likely first
    top_p = (top_x - torch.logsumexp(scaled, dim=-1, keepdim=True)).exp()
    wide = top_p.sum(-1) < params.top_p  # the nucleus may reach past the candidates: sort these rows fully
    if not wide.any():
        return _nucleus(top_p, top_i, params.top_p, gen)
    out = torch.empty(len(scaled), dtype=torch.long, device=scaled.device)
    if not wide.all():
        out[~wide] = _nucleus(top_p[~wide], top_i[~wide], params.top_p, gen)
    out[wide] = _nucleus(*torch.softmax(scaled[wide], dim=-1).sort(dim=-1, descending=True), params.top_p, gen)
    return out


def _nucleus(sorted_p: torch.Tensor, sorted_i: torch.Tensor, top_p: float, gen: torch.Generator) -> torch.Tensor:
    """Sample from the top-p nucleus of probabilities sorted in descending order (with their token ids)."""
    import torch

    # drop a token when the mass of the tokens ranked above it already reaches top_p (keeps >= 1 token)
    drop = (sorted_p.cumsum(-1) - sorted_p) >= top_p
    choice = torch.multinomial(sorted_p.masked_fill(drop, 0.0), 1, generator=gen)
    return sorted_i.gather(-1, choice).squeeze(-1)

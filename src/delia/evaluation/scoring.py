"""Teacher-forced scoring: downstream loss over response tokens and the state space of the first response token.

One forward pass per batch gives both (baselines.md §11-12):
- loss: token-weighted cross-entropy over the response tokens, i.e. everything the chat template adds after
  the generation prompt (the reply and its end-of-turn marker: what TRL's completion-only loss trains on);
  prompt tokens never count. Summed over all rows, then divided by the total token count.
- state space of the first divergent token (the first response token, the JSON `{`): with p the model's
  next-token distribution after the prompt, exp(H(p)), the fewest tokens covering 90% of the mass, and
  -log p(gold first token).
Rows are padded (left or right) with explicit position ids, so results do not depend on batch size or
padding side; only the needed positions are projected to the vocabulary (`logits_to_keep` as a mask).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass
class RowScore:
    """Per-row results. `nll_sum`/`n_tokens` are 0 for rows scored without a response."""

    n_tokens: int
    nll_sum: float
    exp_entropy: float
    n90: int
    nll_first: float | None


def encode(tokenizer, prompt: list[dict[str, str]], response: str | None) -> tuple[list[int], list[int]]:
    """(prompt ids with the generation prompt, response ids) from the chat template.

    The response ids are the tail of the templated full conversation after the prompt ids; raises
    ValueError if the template does not extend the prompt (then prompt/response boundaries are ambiguous).
    """
    ptext = tokenizer.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    pids = tokenizer(ptext, add_special_tokens=False)["input_ids"]
    if response is None:
        return pids, []
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": response}], tokenize=False)
    if not full.startswith(ptext):
        raise ValueError("the chat template's full conversation does not start with the generation prompt")
    fids = tokenizer(full, add_special_tokens=False)["input_ids"]
    if fids[:len(pids)] != pids:  # a merge across the boundary: tokenise the reply on its own
        return pids, tokenizer(full[len(ptext):], add_special_tokens=False)["input_ids"]
    return pids, fids[len(pids):]


def distribution_stats(logp: torch.Tensor, mass: float = 0.9) -> tuple[float, int]:
    """(exp(entropy), fewest tokens covering `mass`) of one distribution given as log-probabilities."""
    logp = logp.double()
    p = logp.exp()
    h = -torch.where(p > 0, p * logp, torch.zeros_like(p)).sum()
    csum = torch.sort(p, descending=True).values.cumsum(0)
    # tolerance: a uniform distribution's cumsum hits k/|V| only up to rounding
    n = int(torch.searchsorted(csum, torch.tensor(mass - 1e-9, dtype=csum.dtype)).item()) + 1
    return float(h.exp()), min(n, p.numel())


@torch.inference_mode()
def score(model, rows: Sequence[tuple[list[int], list[int]]], pad_id: int, batch_size: int = 4,
          padding_side: str = "left", on_batch=None) -> list[RowScore]:
    """Score (prompt ids, response ids) rows; see the module doc.

    Args:
        model: causal LM (PEFT-wrapped or not).
        rows: (prompt ids, response ids); an empty response scores only the first-token distribution.
        pad_id: id used for padding (masked out).
        batch_size: rows per forward pass.
        padding_side: 'left' or 'right' (results agree; both exist to test that).
        on_batch: optional callback(n_rows_done) for progress.
    Returns:
        One RowScore per row, in input order.
    """
    if padding_side not in ("left", "right"):
        raise ValueError("padding_side must be 'left' or 'right'")
    order = sorted(range(len(rows)), key=lambda i: len(rows[i][0]) + len(rows[i][1]), reverse=True)
    out: list[RowScore | None] = [None] * len(rows)
    device = model.device
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        seqs = [rows[i][0] + rows[i][1] for i in idx]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(idx), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(idx), width), dtype=torch.long)
        keep = torch.zeros((len(idx), width), dtype=torch.bool)
        offsets = []
        for r, i in enumerate(idx):
            s = seqs[r]
            off = width - len(s) if padding_side == "left" else 0
            ids[r, off:off + len(s)] = torch.tensor(s)
            mask[r, off:off + len(s)] = 1
            p_len, r_len = len(rows[i][0]), len(rows[i][1])
            # the logit at position t predicts token t+1: keep the last prompt position and every
            # response position except the last one
            keep[r, off + p_len - 1: off + p_len - 1 + max(r_len, 1)] = True
            offsets.append(off)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), position_ids=pos.to(device),
                       logits_to_keep=keep.to(device), use_cache=False).logits
        logits = logits.reshape(-1, logits.shape[-1])  # (sum of kept positions, V), row-major
        logp_all = torch.log_softmax(logits.float(), dim=-1)
        k = 0
        for r, i in enumerate(idx):
            resp = rows[i][1]
            n_keep = max(len(resp), 1)
            lp = logp_all[k:k + n_keep]
            k += n_keep
            exp_h, n90 = distribution_stats(lp[0])
            if resp:
                tgt = torch.tensor(resp, device=lp.device)
                nll = -lp.gather(1, tgt[:, None]).squeeze(1).double()
                out[i] = RowScore(len(resp), float(nll.sum()), exp_h, n90, float(nll[0]))
            else:
                out[i] = RowScore(0, 0.0, exp_h, n90, None)
        if on_batch:
            on_batch(len(idx))
    return out  # type: ignore[return-value]


def aggregate(scores: Sequence[RowScore]) -> dict[str, float | int | None]:
    """Token-weighted loss, geometric means of the state-space sizes, mean -log p(gold first token)."""
    if not scores:
        return {}
    n_tok = sum(s.n_tokens for s in scores)
    gold = [s.nll_first for s in scores if s.nll_first is not None]
    return {
        "rows": len(scores),
        "response_tokens": n_tok,
        "loss": sum(s.nll_sum for s in scores) / n_tok if n_tok else None,
        "state_space_exp_entropy_geomean": math.exp(sum(math.log(s.exp_entropy) for s in scores) / len(scores)),
        "state_space_n90_geomean": math.exp(sum(math.log(s.n90) for s in scores) / len(scores)),
        "first_token_nll_mean": sum(gold) / len(gold) if gold else None,
    }

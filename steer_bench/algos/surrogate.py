"""The shared clipped surrogate (verl's dual-clip PPO) and the loss aggregation modes.

Every policy loss is  agg(L ⊙ w)  with L from :func:`clipped_surrogate` and a per-token weight (or extra
term) from the method; so methods differ only in their per-token piece.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


@dataclass(frozen=True)
class Surrogate:
    """Per-token pieces of the clipped surrogate, all (B, T)."""

    loss: Tensor  # L, with gradient through log_probs
    ratio: Tensor  # r = exp(clamp(logp − old_logp, −20, 20)), detached
    clipped: Tensor  # bool: the PPO clip binds (L2 > L1), the token gets no gradient from L
    clipped_high: Tensor  # bool: r > 1 + ε_high and A > 0
    clipped_low: Tensor  # bool: r < 1 − ε_low and A < 0
    clipped_dual: Tensor  # bool: A < 0 and the dual-clip bound −A·c binds


def clipped_surrogate(
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    *,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
) -> Surrogate:
    """verl's dual-clip PPO surrogate per token (to be minimised).

    r = exp(clamp(logp − old_logp, −20, 20)); L1 = −A·r; L2 = −A·clip(r, 1 − ε_low, 1 + ε_high);
    Lc = max(L1, L2); L = min(−A·c, Lc) where A < 0, else Lc.
    ``clip_low`` / ``clip_high`` None leave that side of r unbounded (both None: L = L1, as verl's kl_cov);
    ``clip_c`` None disables the dual clip (as verl's clip_cov and kl_cov); otherwise c must be > 1.
    """
    if clip_c is not None and clip_c <= 1:
        raise ValueError(f"dual-clip constant clip_c must be > 1 (or None to disable), got {clip_c}")
    log_ratio = (log_probs - old_log_probs).clamp(-20.0, 20.0)
    ratio = log_ratio.exp()
    loss1 = -advantages * ratio
    lo = None if clip_low is None else 1.0 - clip_low
    hi = None if clip_high is None else 1.0 + clip_high
    if lo is None and hi is None:
        loss_c = loss1
        clipped = torch.zeros_like(loss1, dtype=torch.bool)
    else:
        loss2 = -advantages * ratio.clamp(lo, hi)
        loss_c = torch.maximum(loss1, loss2)
        clipped = (loss2 > loss1).detach()
    r = ratio.detach()
    clipped_high = (r > hi) & (advantages > 0) if hi is not None else torch.zeros_like(clipped)
    clipped_low = (r < lo) & (advantages < 0) if lo is not None else torch.zeros_like(clipped)
    if clip_c is None:
        loss = loss_c
        clipped_dual = torch.zeros_like(clipped)
    else:
        loss3 = -advantages * clip_c
        loss = torch.where(advantages < 0, torch.minimum(loss3, loss_c), loss_c)
        clipped_dual = ((loss_c > loss3) & (advantages < 0)).detach()
    return Surrogate(loss, r, clipped, clipped_high, clipped_low, clipped_dual)


def aggregate(
    loss_mat: Tensor,
    mask: Tensor,
    *,
    agg: str,
    batch_tokens: int | None = None,
    batch_seqs: int | None = None,
    max_response_len: int | None = None,
) -> Tensor:
    """Reduce a per-token matrix (B, T) to a scalar; exact under gradient accumulation.

    token-mean:              Σ_{i,t} L·M / N_tok
    seq-mean-token-mean:     Σ_i (Σ_t L·M / Σ_t M) / N_seq      (empty sequences contribute 0)
    seq-mean-token-sum-norm: Σ_{i,t} L·M / (N_seq · L_max)       (Dr. GRPO)

    N_tok / N_seq are the mini-batch's valid-token count and non-empty-sequence count (``batch_tokens``,
    ``batch_seqs``); None uses this call's own, which makes the sum of micro-batch losses equal the
    mini-batch loss only if the caller passes the totals. L_max is ``max_response_len`` (Dr. GRPO's constant:
    the generation budget); None uses this call's padded length T, as verl's default.
    Decision: sum-norm divides by N_seq like Dr. GRPO and TRL, so it equals token-mean when every response
    is L_max long; verl v0.4.1 divides by T only (a constant factor N_seq larger).
    """
    mask = mask.to(loss_mat.dtype)
    masked = loss_mat * mask
    if agg == "token-mean":
        denom = batch_tokens if batch_tokens is not None else mask.sum().clamp(min=1)
        return masked.sum() / denom
    seq_len = mask.sum(-1)
    n_seq = batch_seqs if batch_seqs is not None else (seq_len > 0).sum().clamp(min=1)
    if agg == "seq-mean-token-mean":
        return (masked.sum(-1) / seq_len.clamp(min=1)).sum() / n_seq
    if agg == "seq-mean-token-sum-norm":
        length = max_response_len if max_response_len is not None else loss_mat.shape[-1]
        return masked.sum() / (n_seq * length)
    raise ValueError(f"unknown loss aggregation {agg!r}; valid: {', '.join(AGG_MODES)}")

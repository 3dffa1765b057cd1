"""Padding-free forward passes (``train.remove_padding``): a micro-batch's real tokens in one row.

verl's ``use_remove_padding=True`` (the release's ``run_exp.sh:50``; docs/recipe.md §R4): instead of the
(B, P+T) left-padded-prompt / right-padded-response layout of :class:`~steer_bench.rollout.batch.PaddedRollout`,
the B sequences (prompt then response, padding dropped) are concatenated into one (1, N) row, N = Σ_b L_b, with
``position_ids`` restarting at 0 for each sequence (the same positions the padded layout gives them)::

    input_ids     (1, N)  [prompt₀ response₀ | prompt₁ response₁ | …]   the attention mask's 1s, row after row
    position_ids  (1, N)  [0 1 … L₀−1 | 0 1 … L₁−1 | …]

transformers reads the sequence boundaries from the restarts when it gets no attention mask and no cache
(``masking_utils.find_packed_sequence_indices``: sdpa, eager and flex attention get a block-diagonal causal mask;
``modeling_flash_attention_utils._is_packed_sequence``: flash attention runs its varlen kernel), so attention
stays within each sequence and every token sees exactly the context it sees in the padded layout. Only the
logits that predict a response token are computed (``logits_to_keep`` as an index: K = Σ_b R_b positions,
never the prompts'), and the per-token results are scattered back to the (B, T) layout.

What it saves: the padded forward computes B·(P_used + T_used) positions, the packed one N (the padding share is
measured by :func:`padding_share`; docs/packing.md). The two compute the same per-token values up to float
rounding (``tests/rollout/test_packing.py``); with sdpa or eager the block-diagonal mask is dense (N², see
docs/packing.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.entropy import logprobs_and_entropy
from steer_bench.rollout.batch import PaddedRollout
from steer_bench.rollout.model import select_rows


@dataclass(frozen=True)
class PackedRows:
    """Rows of a :class:`PaddedRollout` packed into one sequence (module docstring)."""

    input_ids: Tensor
    """(1, N) the rows' real tokens, one sequence after another."""
    position_ids: Tensor
    """(1, N) restarting at 0 at each sequence's first token."""
    keep: Tensor
    """(K,) the packed positions whose logits predict a response token, in (row, t) order; K ≥ 1 (an all-empty
    micro-batch keeps one position, masked out, so the backward still reaches every parameter)."""
    labels: Tensor
    """(1, K) the response token each kept position predicts."""
    response_mask: Tensor
    """(B, T) of the padded layout: where the K values go back (row-major)."""


def pack_rows(batch: PaddedRollout, rows: Tensor) -> PackedRows:
    """Pack the rows ``rows`` of ``batch``; every row with a response needs a non-empty prompt."""
    ids, att, resp = batch.input_ids[rows], batch.attention_mask[rows].bool(), batch.response_mask[rows].bool()
    p, t = batch.prompt_len, resp.shape[1]
    if p == 0 or not att[:, p - 1][resp.any(1)].all():
        raise ValueError("pack_rows: a row with a response has an empty prompt; nothing predicts its first token")
    index = att.flatten().cumsum(0).view(att.shape) - 1  # packed position of each real token of the padded layout
    # Response token t of a row is predicted by the padded column p − 1 + t (its previous token), a real token.
    keep, labels = index[:, p - 1 : p - 1 + t][resp], ids[:, p:][resp]
    if keep.numel() == 0:
        keep, labels = index[att][-1:], ids[att][-1:]
    return PackedRows(ids[att][None], batch.position_ids[rows][att][None], keep, labels[None], resp)


def score_packed(model: Any, packed: PackedRows, *, temperature: float) -> tuple[Tensor, Tensor]:
    """(logp (B, T), entropy (B, T)) of the packed rows' responses under softmax(logits/τ), 0 off the responses:
    :func:`~steer_bench.rollout.batch.score_responses` computed on the packed row.

    No attention mask and no cache (a cache would hide the restarts from transformers' packed-sequence detection
    and let every token attend to the previous sequences); ``temperature == 0`` (greedy) scores at τ = 1."""
    logits = model(
        input_ids=packed.input_ids,
        position_ids=packed.position_ids,
        attention_mask=None,
        use_cache=False,
        logits_to_keep=packed.keep,  # (1, K, V): only the response positions' logits
    ).logits
    logp, entropy = logprobs_and_entropy(logits, packed.labels, temperature=temperature if temperature > 0 else 1.0)
    return _unpack(logp, packed.response_mask), _unpack(entropy, packed.response_mask)


def _unpack(x: Tensor, mask: Tensor) -> Tensor:
    """(1, K) -> (B, T): masked_scatter fills the mask's 1s in row-major order, the order of ``keep``, and keeps the
    graph connected to the kept logits (an all-empty micro-batch's one extra value is left out: zero gradient)."""
    return torch.zeros(mask.shape, dtype=x.dtype, device=x.device).masked_scatter(mask, x[0])


def padding_share(batch: PaddedRollout, micro_batches: list[Tensor]) -> tuple[int, int]:
    """(real tokens, positions the padded forward computes) over ``micro_batches`` of ``batch``'s rows: each
    micro-batch's padded layout keeps the columns that are real in some row (:func:`select_rows`)."""
    subs = [select_rows(batch, rows) for rows in micro_batches]
    return sum(int(s.attention_mask.sum()) for s in subs), sum(s.input_ids.numel() for s in subs)

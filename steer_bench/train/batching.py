"""Which rows each rank updates on (``train.batch_order``) and how micro-batch losses scale (``train.loss_scale``).

Batch order (docs/fidelity.md item 4):

- ``grouped`` (ours): each rank updates on the rows it generated, in order, so a micro-batch of n sequences is
  one prompt's n responses.
- ``release``: verl's ``trainer.balance_batch=True`` (STEER release, ``ray_trainer._balance_batch``): the step's
  whole batch (every rank's rows, rank-major = prompt order) is cut into ``world`` equal-size parts with
  near-equal token counts (prompt + response tokens, the attention mask's sum) by the largest-differencing
  (Karmarkar–Karp) heuristic, each part in ascending row order; rank r updates on part r, then splits it into
  mini- and micro-batches in order. A micro-batch then mixes responses of several prompts, which changes what
  STEER's per-micro-batch max|Ω| and Clip-Cov/KL-Cov's per-call statistics see. With one process the single
  part is every row in order: identical to ``grouped``, as in verl. The order is a pure function of the
  step's lengths (no random draw), hence of the step seed: a resumed run replays it.
  Ours is our own implementation of the same method; where lengths tie, the part a row lands in can differ
  from verl's heap order (the balance bound below holds either way).

Loss scale (item 5), for a mini-batch of M micro-batches on each of W ranks:

- ``global_tokens`` (ours, the paper's 1/Σ|o_i|): each micro-batch's loss uses the mini-batch's global token
  (and sequence) counts as denominators; its gradient is multiplied by W to undo DDP's mean over ranks, so the
  accumulated gradient is that of Σ_{all tokens} ℓ / N_tok.
- ``release`` (verl v0.4.1 ``dp_actor.update_policy``): each micro-batch's own aggregate (token-mean over its
  tokens) divided by M (gradient accumulation), and DDP's mean over ranks: (1/W) Σ_ranks (1/M) Σ_micro mean(ℓ).
  The two agree when every micro-batch has the same number of valid tokens, and differ otherwise.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from steer_bench.rollout.batch import PaddedRollout

BATCH_ORDERS = ("grouped", "release")
LOSS_SCALES = ("global_tokens", "release")


# ---------------------------------------------------------------------------------------------- partition
def balanced_partitions(lengths: Sequence[int], k: int) -> list[list[int]]:
    """``k`` parts of equal size of the indices of ``lengths``, with near-equal length sums, each ascending.

    Largest differencing with equal sizes: sort, cut into groups of k consecutive items (one per part), then
    repeatedly merge the two partial solutions with the largest spread (max − min part sum), pairing the
    heaviest part of one with the lightest of the other. The final spread is at most the largest range of one
    group of k consecutive sorted lengths (so at most max − min length).
    """
    n = len(lengths)
    if k < 1 or n % k:
        raise ValueError(f"cannot cut {n} rows into {k} parts of equal size")
    order = sorted(range(n), key=lambda i: (lengths[i], i))
    heap: list[tuple[float, int, list[tuple[int, list[int]]]]] = []
    for tie, start in enumerate(range(0, n, k)):
        parts = sorted(((lengths[i], [i]) for i in order[start : start + k]), key=lambda p: -p[0])
        heapq.heappush(heap, (-(parts[0][0] - parts[-1][0]), tie, parts))
    tie = len(heap)
    while len(heap) > 1:
        _, _, a = heapq.heappop(heap)
        _, _, b = heapq.heappop(heap)
        pairs = zip(a, reversed(b), strict=True)  # heaviest of a with lightest of b
        merged = sorted(((sa + sb, ia + ib) for (sa, ia), (sb, ib) in pairs), key=lambda p: -p[0])
        heapq.heappush(heap, (-(merged[0][0] - merged[-1][0]), tie, merged))
        tie += 1
    return sorted(sorted(idx) for _, idx in heap[0][2]) if heap else [[] for _ in range(k)]


def release_order(lengths: Sequence[int], world: int) -> list[int]:
    """Global row order of ``batch_order: release``: part r (ascending) is rows [r·B/W, (r+1)·B/W) of it."""
    return [i for part in balanced_partitions(lengths, world) for i in part]


# ---------------------------------------------------------------------------------------------- exchange
def _pad_rollout(batch: PaddedRollout, prompt_len: int, response_len: int, pad_id: int) -> PaddedRollout:
    """Left-pad the prompt part to ``prompt_len`` and right-pad the response part to ``response_len``."""
    left, right = prompt_len - batch.prompt_len, response_len - batch.response_mask.shape[1]

    def pad(t: Tensor, value: float) -> Tensor:
        return torch.nn.functional.pad(t, (left, right), value=value)

    lp = batch.response_logprobs
    return PaddedRollout(
        pad(batch.input_ids, pad_id),
        pad(batch.attention_mask, 0),
        pad(batch.position_ids, 0),
        torch.nn.functional.pad(batch.response_mask, (0, right)),
        None if lp is None else torch.nn.functional.pad(lp, (0, right)),
    )


def order_for_update(
    mode: str,
    batch: PaddedRollout,
    old: tuple[Tensor, Tensor],
    adv: Tensor,
    accelerator: Any,
    pad_id: int,
) -> tuple[PaddedRollout, tuple[Tensor, Tensor], Tensor]:
    """(batch, (old log-probs, old entropy), advantages) of the rows this rank updates on: its own (``grouped``;
    also ``release`` with one process), or its part of the length-balanced partition of every rank's rows
    (``release``). All per-token tensors are (B, T); T may grow to the longest over ranks (zero padding, mask 0)."""
    if mode not in BATCH_ORDERS:
        raise ValueError(f"batch_order must be one of {BATCH_ORDERS}, got {mode!r}")
    world = accelerator.num_processes
    if mode == "grouped" or world == 1:
        return batch, old, adv
    dev = batch.input_ids.device
    shape = torch.tensor([[batch.prompt_len, batch.response_mask.shape[1]]], device=dev)
    p_max, t_max = (int(v) for v in accelerator.gather(shape).max(0).values)
    local = _pad_rollout(batch, p_max, t_max, pad_id)
    tokens = [torch.nn.functional.pad(t, (0, t_max - t.shape[1])) for t in (*old, adv)]
    fields = (local.input_ids, local.attention_mask, local.position_ids, local.response_mask, *tokens)
    gathered = [accelerator.gather(t) for t in fields]
    lp = None if local.response_logprobs is None else accelerator.gather(local.response_logprobs)
    lengths = gathered[1].sum(-1).tolist()  # prompt + response tokens, as verl's attention-mask sum
    share = len(lengths) // world
    rows = torch.tensor(release_order(lengths, world)[accelerator.process_index * share :][:share], device=dev)
    ids, att, pos, resp, old_logp, old_ent, moved_adv = (g[rows] for g in gathered)
    return PaddedRollout(ids, att, pos, resp, None if lp is None else lp[rows]), (old_logp, old_ent), moved_adv


# ---------------------------------------------------------------------------------------------- loss scale
def loss_totals(mode: str, mini_totals: dict[str, int]) -> dict[str, int]:
    """Denominators passed to every micro-batch's ``policy_loss``: the mini-batch's global counts
    (``global_tokens``) or none, so that each call uses its own (``release``)."""
    if mode not in LOSS_SCALES:
        raise ValueError(f"loss_scale must be one of {LOSS_SCALES}, got {mode!r}")
    return dict(mini_totals) if mode == "global_tokens" else {}


def loss_factor(mode: str, n_micro: int, world: int) -> float:
    """What a micro-batch's loss is multiplied by before backward (DDP then averages over ``world`` ranks)."""
    if mode not in LOSS_SCALES:
        raise ValueError(f"loss_scale must be one of {LOSS_SCALES}, got {mode!r}")
    return float(world) if mode == "global_tokens" else 1.0 / n_micro

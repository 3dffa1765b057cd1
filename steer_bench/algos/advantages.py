"""Outcome-reward advantage estimators: one score per response, broadcast to its tokens.

Every estimator maps scores (B,) and prompt groups (B,) to a per-response advantage (B,); the public
entry :func:`compute_advantages` broadcasts it over the response tokens and zeroes padding:
``A[i, t] = a_i · M[i, t]``. An estimator that also needs the old policy's token entropy takes an
``entropy`` (B, T) argument. Hyperparameters are keyword-only without defaults (they live in
``configs/methods/*.yaml``).

Groups of one response (no baseline is possible) follow verl for every estimator: the baseline is 0
and the score is kept (GRPO additionally divides by std 1 + eps), so ``A = s``.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import Tensor

from steer_bench.algos.registry import check_params, lookup

# The advantage estimators, by the name used in configs/methods/*.yaml, and those whose baseline is a group
# statistic (they need n ≥ 2 responses per prompt to mean anything); filled by @estimator below.
ADVANTAGES: dict[str, Callable[..., Tensor]] = {}
GROUP_ESTIMATORS: set[str] = set()


def estimator(*, groups: bool) -> Callable[[Callable[..., Tensor]], Callable[..., Tensor]]:
    """Register an estimator under its function name; ``groups``: its baseline is a group statistic."""

    def register(fn: Callable[..., Tensor]) -> Callable[..., Tensor]:
        ADVANTAGES[fn.__name__] = fn
        if groups:
            GROUP_ESTIMATORS.add(fn.__name__)
        return fn

    return register


def _group_stats(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-response group size n, group mean and unbiased group std (float64; std 0 for n = 1)."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    s = scores.to(torch.float64)
    n = torch.bincount(inv).to(torch.float64)
    mean = torch.zeros_like(n).index_add_(0, inv, s) / n
    sq = torch.zeros_like(n).index_add_(0, inv, (s - mean[inv]) ** 2)
    std = torch.where(n > 1, sq / (n - 1).clamp(min=1), torch.zeros_like(n)).sqrt()
    return n[inv], mean[inv], std[inv]


@estimator(groups=True)
def grpo(scores: Tensor, group_ids: Tensor, response_mask: Tensor, *, norm_by_std: bool, eps: float) -> Tensor:
    """GRPO: a_i = (s_i − mean_g) / (std_g + eps), std unbiased (n−1); Dr. GRPO: a_i = s_i − mean_g.

    verl ``compute_grpo_outcome_advantage``: a group of one uses mean 0 and std 1. All-equal scores give
    std 0 and a = 0. Shapes: scores (B,), group_ids (B,) int, returns (B,).
    """
    n, mean, std = _group_stats(scores, group_ids)
    single = n == 1
    mean = torch.where(single, torch.zeros_like(mean), mean)
    centred = scores.to(torch.float64) - mean
    if not norm_by_std:
        return centred
    std = torch.where(single, torch.ones_like(std), std)
    return centred / (std + eps)


@estimator(groups=True)
def rloo(scores: Tensor, group_ids: Tensor, response_mask: Tensor) -> Tensor:
    """RLOO: a_i = s_i − mean_{j≠i} s_j = n/(n−1)·(s_i − mean_g) (verl ``compute_rloo_outcome_advantage``)."""
    n, mean, _ = _group_stats(scores, group_ids)
    s = scores.to(torch.float64)
    return torch.where(n > 1, n / (n - 1).clamp(min=1) * (s - mean), s)


@estimator(groups=True)
def opo(scores: Tensor, group_ids: Tensor, response_mask: Tensor) -> Tensor:
    """OPO: a_i = s_i − b_g with the length-weighted baseline b_g = Σ_j len_j·s_j / Σ_j len_j.

    len_j = Σ_t M[j, t] (verl ``compute_opo_outcome_advantage``). Decision: if every response of a group
    is empty (Σ len = 0) the baseline falls back to the plain group mean instead of 0/0.
    """
    _, inv = torch.unique(group_ids, return_inverse=True)
    s = scores.to(torch.float64)
    length = response_mask.to(torch.float64).sum(-1)
    count = torch.bincount(inv).to(torch.float64)
    len_sum = torch.zeros_like(count).index_add_(0, inv, length)
    weighted = torch.zeros_like(count).index_add_(0, inv, length * s)
    plain = torch.zeros_like(count).index_add_(0, inv, s) / count
    base = torch.where(len_sum > 0, weighted / len_sum.clamp(min=1e-12), plain)
    base = torch.where(count > 1, base, torch.zeros_like(base))
    return s - base[inv]


@estimator(groups=False)
def w_reinforce(scores: Tensor, group_ids: Tensor, response_mask: Tensor, *, positive_weight: float) -> Tensor:
    """W-REINFORCE (Zhu et al. 2025): a = +λ if correct, −1 if wrong; no baseline, groups unused.

    Scores must be binary, {0, 1} or {−1, +1}; "correct" means s > 0 (verl fork ``psr_nsr``, weighted).
    """
    bad = ~((scores == 0) | (scores == 1) | (scores == -1))
    if bad.any():
        raise ValueError(
            f"w_reinforce needs binary scores in {{0, 1}} or {{-1, 1}}; got {scores[bad][0].item()!r} "
            f"at row {int(bad.nonzero()[0])}"
        )
    return torch.where(scores > 0, positive_weight, -1.0).to(torch.float64)


@estimator(groups=True)
def entropy_adv(
    scores: Tensor,
    group_ids: Tensor,
    response_mask: Tensor,
    entropy: Tensor,
    *,
    alpha: float,
    kappa: float,
    norm_by_std: bool,
    eps: float,
) -> Tensor:
    """Entropy-based advantage shaping (Cheng et al. 2025): A'_t = A_t + min(α·H_t, |A_t|/κ), per token.

    A is the GRPO advantage; H (B, T) the rollout (old) policy's entropy, no gradient. Since the bonus is
    capped at |A|/κ with κ > 1 it never flips the sign of A, and tokens with A = 0 get nothing.
    Returns (B, T) (already token-level; :func:`compute_advantages` still applies the mask).
    """
    adv = grpo(scores, group_ids, response_mask, norm_by_std=norm_by_std, eps=eps)[:, None]
    bonus = torch.minimum(alpha * entropy.detach().to(torch.float64), adv.abs() / kappa)
    return adv + bonus


def estimator_needs_entropy(name: str) -> bool:
    """Whether the estimator takes the old policy's token entropy (B, T)."""
    return "entropy" in inspect.signature(lookup("advantage estimator", ADVANTAGES, name)).parameters


def compute_advantages(
    name: str,
    scores: Tensor,
    group_ids: Tensor,
    response_mask: Tensor,
    *,
    entropy: Tensor | None = None,
    **params: object,
) -> Tensor:
    """Token-level advantages (B, T) from scores (B,), group ids (B,) and the response mask (B, T).

    ``entropy`` (B, T) is the rollout policy's token entropy, used only by estimators that take it
    (``entropy_adv``) and ignored by the others. ``params`` are the estimator's keyword-only hyperparameters.
    Returns float32 (B, T), 0 on padding.
    """
    fn = lookup("advantage estimator", ADVANTAGES, name)
    if scores.shape != group_ids.shape or scores.dim() != 1 or response_mask.shape[0] != scores.shape[0]:
        raise ValueError(
            f"shapes: scores {tuple(scores.shape)} and group_ids {tuple(group_ids.shape)} must be (B,), "
            f"response_mask {tuple(response_mask.shape)} (B, T)"
        )
    check_params("advantage estimator", name, fn, params)
    mask = response_mask.to(torch.float64)
    with torch.no_grad():
        if estimator_needs_entropy(name):
            if entropy is None:
                raise ValueError(f"advantage estimator {name!r} needs the rollout entropy (entropy=...)")
            adv = fn(scores, group_ids, response_mask, entropy, **params)
        else:
            adv = fn(scores, group_ids, response_mask, **params)
        if adv.dim() == 1:
            adv = adv[:, None]
        return (adv * mask).to(torch.float32)

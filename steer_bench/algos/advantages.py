"""Outcome-reward advantage estimators: one score per response, broadcast to its tokens.

Every estimator maps scores (B,) and prompt groups (B,) to a per-response advantage (B,); the public
entry :func:`compute_advantages` broadcasts it over the response tokens and zeroes padding:
``A[i, t] = a_i · M[i, t]``. Each estimator is a part of kind ``advantage`` (:mod:`steer_bench.algos.registry`):
a frozen dataclass whose fields are its hyperparameters (no defaults: they live in ``configs/methods/*.yaml``),
declaring whether its baseline is a group statistic (``groups``), whether it reads the old policy's token entropy
(``needs_old_entropy``) and the training step (``needs_step``); calling it gives the token-level advantages.

Groups of one response (no baseline is possible) follow verl for every estimator: the baseline is 0
and the score is kept (GRPO additionally divides by std 1 + eps), so ``A = s``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from steer_bench.algos.registry import REGISTRY, Part, build, register


@dataclass(frozen=True)
class StepContext:
    """What some estimators read besides the scores: π_old's token entropy (B, T) and the training step k
    (1-based, as verl's ``global_steps``) of T with the step batch's mean π_old entropy over every rank."""

    entropy: Tensor | None = None
    step: int | None = None
    total_steps: int | None = None
    step_entropy: float | None = None


@dataclass(frozen=True, kw_only=True)
class Advantage(Part):
    """An advantage estimator: scores (B,), groups (B,), mask (B, T) → a (B,) or (B, T) advantage (:meth:`estimate`);
    calling it broadcasts to float32 (B, T), 0 on padding."""

    role = "advantage"
    groups: ClassVar[bool] = True  # the baseline is a group statistic: n ≥ 2 responses per prompt to mean anything
    needs_step: ClassVar[bool] = False  # a schedule over the training step (``grpo_range_linear``)

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        raise NotImplementedError

    def __call__(
        self,
        scores: Tensor,
        group_ids: Tensor,
        response_mask: Tensor,
        *,
        entropy: Tensor | None = None,
        step: int | None = None,
        total_steps: int | None = None,
        step_entropy: float | None = None,
    ) -> Tensor:
        """Token-level advantages (B, T) from scores (B,), group ids (B,) and the response mask (B, T).

        ``entropy`` (B, T) is the rollout policy's token entropy, read only by estimators that need it
        (``needs_old_entropy``); ``step`` / ``total_steps``: the training step k (1-based: the first update is
        step 1) of T, and ``step_entropy`` the step batch's mean π_old token entropy over every rank (None: the
        estimator's masked mean of ``entropy``), read only by estimators with a schedule (``needs_step``).
        Returns float32 (B, T), 0 on padding.
        """
        if scores.shape != group_ids.shape or scores.dim() != 1 or response_mask.shape[0] != scores.shape[0]:
            raise ValueError(
                f"shapes: scores {tuple(scores.shape)} and group_ids {tuple(group_ids.shape)} must be (B,), "
                f"response_mask {tuple(response_mask.shape)} (B, T)"
            )
        if self.needs_old_entropy and entropy is None:
            raise ValueError(f"advantage estimator {self.name!r} needs the rollout entropy (entropy=...)")
        if self.needs_step and (step is None or total_steps is None):
            raise ValueError(f"advantage estimator {self.name!r} needs the training step (step=..., total_steps=...)")
        mask = response_mask.to(torch.float64)
        with torch.no_grad():
            ctx = StepContext(entropy, step, total_steps, step_entropy)
            adv = self.estimate(scores, group_ids, response_mask, ctx)
            if adv.dim() == 1:
                adv = adv[:, None]
            return (adv * mask).to(torch.float32)


# The advantage estimators by the name used in configs/methods/*.yaml (the registry's table of the kind).
ADVANTAGES = REGISTRY["advantage"]


def _group_stats(scores: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-response group size n, group mean and unbiased group std (float64; std 0 for n = 1)."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    s = scores.to(torch.float64)
    n = torch.bincount(inv).to(torch.float64)
    mean = torch.zeros_like(n).index_add_(0, inv, s) / n
    sq = torch.zeros_like(n).index_add_(0, inv, (s - mean[inv]) ** 2)
    std = torch.where(n > 1, sq / (n - 1).clamp(min=1), torch.zeros_like(n)).sqrt()
    return n[inv], mean[inv], std[inv]


def grpo(scores: Tensor, group_ids: Tensor, *, norm_by_std: bool, eps: float) -> Tensor:
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


@register
@dataclass(frozen=True, kw_only=True)
class Grpo(Advantage):
    """GRPO / Dr. GRPO (:func:`grpo`)."""

    name = "grpo"
    norm_by_std: bool  # divide by the group std (GRPO) or not (Dr. GRPO)
    eps: float  # added to the std

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        return grpo(scores, group_ids, norm_by_std=self.norm_by_std, eps=self.eps)


@register
@dataclass(frozen=True, kw_only=True)
class Rloo(Advantage):
    """RLOO: a_i = s_i − mean_{j≠i} s_j = n/(n−1)·(s_i − mean_g) (verl ``compute_rloo_outcome_advantage``)."""

    name = "rloo"

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        n, mean, _ = _group_stats(scores, group_ids)
        s = scores.to(torch.float64)
        return torch.where(n > 1, n / (n - 1).clamp(min=1) * (s - mean), s)


@register
@dataclass(frozen=True, kw_only=True)
class Opo(Advantage):
    """OPO: a_i = s_i − b_g with the length-weighted baseline b_g = Σ_j len_j·s_j / Σ_j len_j.

    len_j = Σ_t M[j, t] (verl ``compute_opo_outcome_advantage``). Decision: if every response of a group
    is empty (Σ len = 0) the baseline falls back to the plain group mean instead of 0/0.
    """

    name = "opo"

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
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


@register
@dataclass(frozen=True, kw_only=True)
class WReinforce(Advantage):
    """W-REINFORCE (Zhu et al. 2025): a = +λ if correct, −1 if wrong; no baseline, groups unused.

    Scores must be binary, {0, 1} or {−1, +1}; "correct" means s > 0 (verl fork ``psr_nsr``, weighted).
    """

    name = "w_reinforce"
    groups = False
    positive_weight: float  # λ, the advantage of a correct response

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        bad = ~((scores == 0) | (scores == 1) | (scores == -1))
        if bad.any():
            raise ValueError(
                f"w_reinforce needs binary scores in {{0, 1}} or {{-1, 1}}; got {scores[bad][0].item()!r} "
                f"at row {int(bad.nonzero()[0])}"
            )
        return torch.where(scores > 0, self.positive_weight, -1.0).to(torch.float64)


@register
@dataclass(frozen=True, kw_only=True)
class EntropyAdv(Advantage):
    """Entropy-based advantage shaping (Cheng et al. 2025): A'_t = A_t + min(α·H_t, |A_t|/κ), per token.

    A is the GRPO advantage; H (B, T) the rollout (old) policy's entropy, no gradient. Since the bonus is
    capped at |A|/κ with κ > 1 it never flips the sign of A, and tokens with A = 0 get nothing.
    Returns (B, T) (already token-level; :func:`compute_advantages` still applies the mask).
    """

    name = "entropy_adv"
    needs_old_entropy = True
    alpha: float  # α
    kappa: float  # κ > 1
    norm_by_std: bool  # of the GRPO advantage
    eps: float

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        assert ctx.entropy is not None
        adv = grpo(scores, group_ids, norm_by_std=self.norm_by_std, eps=self.eps)[:, None]
        bonus = torch.minimum(self.alpha * ctx.entropy.detach().to(torch.float64), adv.abs() / self.kappa)
        return adv + bonus


@register
@dataclass(frozen=True, kw_only=True)
class AGrae(Advantage):
    """A-GRAE (arXiv 2602.05548): asymmetric GRPO advantage, shifted towards hard problems, positives shrunk.

    With the GRPO advantage a_i (:func:`grpo`, a group of one: mean 0, std 1), the group mean μ_g and μ̄ the
    plain mean of the groups' means (one per group of the batch, a group of one counting μ_g = 0):

        d_i  = 0.5·a_i / (√μ_g + eps)            (weight on hard problems, small μ_g)
        e_i  = 0.5·a_i / (1 − √μ_g + eps)        (weight on easy problems, large μ_g)
        a'_i = (1 − μ̄)·e_i + μ̄·d_i
        a'_i ← a'_i · min(1, μ̄ / positive_alpha)    if a'_i > 0   (early, when μ̄ is small: shrink positives)

    Source: Yu7-code/A-GRAE ``verl/trainer/ppo/core_algos.py`` ``compute_grpo_outcome_advantage``, the
    ``grpo_weight == 2.0`` branch (``scores_difffouces``, ``scores_easyfouces``, ``overall_mean``,
    ``alpha = 1 #0.5 for geo3k and med, 1 for math``), every step above as written there, including the std
    (``torch.std``, unbiased) and a group of one (mean 0 in μ̄ too, so its d_i is 0.5·a_i/eps: the official
    code's behaviour, kept; the trainer always has n ≥ 2). All-equal groups get a_i = 0, so a'_i = 0.
    Our choice: scores must lie in [0, 1] (√μ_g needs μ_g ≥ 0; the official reward is 0/1) — else ValueError.
    μ̄ is taken over the groups of the call's batch (verl: the driver's whole step batch; here the rank's).
    Shapes: scores (B,), group_ids (B,), returns (B,) float64.
    """

    name = "a_grae"
    positive_alpha: float  # the μ̄ below which positives shrink (release alpha = 1 for math)
    norm_by_std: bool  # of the GRPO advantage
    eps: float

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        if ((scores < 0) | (scores > 1)).any():
            bad = ((scores < 0) | (scores > 1)).nonzero()[0]
            raise ValueError(f"a_grae needs scores in [0, 1]; got {scores[bad].item()!r} at row {int(bad)}")
        adv = grpo(scores, group_ids, norm_by_std=self.norm_by_std, eps=self.eps)
        _, inv = torch.unique(group_ids, return_inverse=True)
        n = torch.bincount(inv).to(torch.float64)
        group_mean = torch.zeros_like(n).index_add_(0, inv, scores.to(torch.float64)) / n
        group_mean = torch.where(n == 1, torch.zeros_like(group_mean), group_mean)  # verl: a group of one has mean 0
        overall = group_mean.mean()
        root = group_mean[inv].sqrt()
        hard = 0.5 * adv / (root + self.eps)
        easy = 0.5 * adv / (1 - root + self.eps)
        shaped = (1 - overall) * easy + overall * hard
        weight = torch.clamp(overall / self.positive_alpha, max=1.0)
        return torch.where(shaped > 0, shaped * weight, shaped)


def range_linear_bounds(
    step: int, total_steps: int, lower_bound_range: Sequence[float], upper_bound_range: Sequence[float]
) -> tuple[float, float]:
    """Entrocraft's entropy bounds at step k of T (1-based, as verl's ``global_steps``): linear from the first
    value of each range (k = 0) to the second (k = T). A function of (k, T) alone, so a resumed run gets the
    bound of an uninterrupted one. Source: lblaoke/entrocraft ``verl/trainer/ppo/core_algos.py``
    ``compute_grpo_range_linear_outcome_advantage`` (``range[0] + (range[1] - range[0]) * step / total_steps``)."""
    if total_steps <= 0:
        raise ValueError(f"grpo_range_linear needs total_steps > 0, got {total_steps}")
    lo = lower_bound_range[0] + (lower_bound_range[1] - lower_bound_range[0]) * step / total_steps
    hi = upper_bound_range[0] + (upper_bound_range[1] - upper_bound_range[0]) * step / total_steps
    return lo, hi


@register
@dataclass(frozen=True, kw_only=True)
class GrpoRangeLinear(Advantage):
    """Entrocraft (arXiv 2604.26326): switch the advantage on the batch entropy H against annealed bounds.

        (l_k, u_k) = :func:`range_linear_bounds` (k, T)
        a_i = max(s_i, 0)   if H > u_k          (RAFT++: positives only, entropy too high → sharpen)
              min(s_i, 0)   if H < l_k          (NSR: negatives only, entropy too low → spread)
              GRPO a_i      otherwise           (:func:`grpo`)

    H is the mean π_old token entropy over every valid token of the step batch (verl ``agg_loss`` of the
    ``entropys`` under the default ``loss_agg_mode`` token-mean, passed as ``current_entropy``);
    ``step_entropy`` gives it (the trainer reduces it over ranks), else the masked mean of ``entropy`` (B, T).
    Sources: lblaoke/entrocraft ``verl/trainer/ppo/core_algos.py`` ``compute_grpo_range_linear_outcome_advantage``
    → ``compute_grpo_range_outcome_advantage`` (``>`` upper → ``compute_raftpp_outcome_advantage``, ``<`` lower →
    ``compute_nsr_outcome_advantage``, else ``compute_grpo_outcome_advantage``) and ``ray_trainer.py``
    ``compute_advantage`` (``step=global_steps``, 1-based; ``total_steps=self.total_training_steps``). RAFT++
    and NSR use the raw score: with 0/1 rewards NSR's advantage is 0 (no update), as in the official code.
    Returns (B,) float64.
    """

    name = "grpo_range_linear"
    needs_old_entropy = True
    needs_step = True
    lower_bound_range: Sequence[float]  # (l at k = 0, l at k = T)
    upper_bound_range: Sequence[float]  # (u at k = 0, u at k = T)
    norm_by_std: bool  # of the GRPO advantage
    eps: float

    def estimate(self, scores: Tensor, group_ids: Tensor, response_mask: Tensor, ctx: StepContext) -> Tensor:
        assert ctx.entropy is not None
        assert ctx.step is not None
        assert ctx.total_steps is not None
        h = ctx.step_entropy
        if h is None:
            m = response_mask.to(torch.float64)
            h = float((ctx.entropy.detach().to(torch.float64) * m).sum() / m.sum().clamp(min=1))
        lo, hi = range_linear_bounds(ctx.step, ctx.total_steps, self.lower_bound_range, self.upper_bound_range)
        s = scores.to(torch.float64)
        if h > hi:
            return s.clamp(min=0)
        if h < lo:
            return s.clamp(max=0)
        return grpo(scores, group_ids, norm_by_std=self.norm_by_std, eps=self.eps)


def compute_advantages(name: str, scores: Tensor, group_ids: Tensor, response_mask: Tensor, **kwargs: Any) -> Tensor:
    """The estimator ``name`` built from the keyword arguments that are its hyperparameters
    (:func:`~steer_bench.algos.registry.build`) and called once with the others (:meth:`Advantage.__call__`)."""
    context = {k: kwargs.pop(k) for k in ("entropy", "step", "total_steps", "step_entropy") if k in kwargs}
    est = build("advantage", name, kwargs)
    assert isinstance(est, Advantage)
    return est(scores, group_ids, response_mask, **context)

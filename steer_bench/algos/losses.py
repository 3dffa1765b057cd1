"""Policy losses: the shared dual-clip surrogate times one registered token-level intervention.

    loss = agg(L_method) − β · agg(H)        (the entropy bonus term only when ``entropy_coef`` β ≠ 0)

where L is :func:`~steer_bench.algos.surrogate.clipped_surrogate` and each entry of :data:`POLICY_LOSSES`
(functions in :mod:`steer_bench.algos.interventions`) turns L into its per-token loss L_method. The entropy
bonus is not a registered loss but a term every loss can take (verl's ``entropy_coeff``), so it composes
with any method (e.g. the paper's "Entro.Loss" under extreme clipping).

| name        | L_method                                                              | source                 |
|-------------|-----------------------------------------------------------------------|------------------------|
| ppo         | L                                                                     | verl ``vanilla``       |
| steer       | λ ⊙ L, λ from |Ω| (no gradient)                                       | STEER release          |
| clip_cov    | L ⊙ keep, keep = 0 on ⌊ratio·N⌋ random tokens with lb < Cov < ub        | Cui et al. / verl      |
| kl_cov      | L + k·|log π − log π_old| on the top ⌊ratio·N⌋ tokens by Cov           | Cui et al. / verl      |
| fork_tokens | L ⊙ 1[H ≥ quantile_{1−ρ}(H)]                                          | Wang et al. (80/20)    |

Weights that remove tokens (clip_cov, fork_tokens) or shrink them (steer) never change the denominator of
the aggregation: it stays the count of valid tokens (as the release for λ, verl for clip_cov and TRL for
the forking-token mask). Per-call statistics (Cov means, clip_cov / kl_cov counts) are over the tokens of
the call, i.e. per micro-batch, as verl does. Decision: the ratio's log is clamped to [−20, 20] for every
loss (verl clamps it in ``vanilla`` and STEER but not in clip_cov / kl_cov; it only matters for r > e^20).

Metrics returned by :func:`policy_loss` (0-d tensors, no gradient; reduction over micro-batches in brackets,
see :mod:`steer_bench.algos.stats`; "frac" = fraction of the call's valid tokens):

| key | meaning |
|---|---|
| loss/n_tokens [sum] | valid tokens in the call |
| loss/pg [sum] | the policy-gradient part of the returned loss (this call's share of the mini-batch loss) |
| loss/entropy_bonus [sum] | β·agg(H), subtracted from the loss (only when β ≠ 0) |
| loss/clipfrac | frac where the PPO clip binds (L2 > L1), verl's ``pg_clipfrac`` |
| loss/clipfrac_high | frac with r > 1 + ε_high and A > 0 |
| loss/clipfrac_low | frac with r < 1 − ε_low and A < 0 |
| loss/clipfrac_dual | frac where the dual clip binds (A < 0 and −A·r > −A·c) |
| loss/approx_kl | mean(log π_old − log π) (verl's ``ppo_kl``) |
| loss/ratio_max [max] | the largest ratio r |
| loss/entropy | mean current-policy token entropy (when given) |
| loss/old_entropy | mean old-policy token entropy (when given) |
| steer/lambda_mean | mean λ |
| steer/lambda_min [min] | smallest λ |
| steer/lambda_max [max] | largest λ |
| steer/frac_lambda_below_099 | frac with λ < 0.99 (tokens STEER visibly down-weights) |
| steer/frac_lambda_at_min | frac with λ ≤ λ_min + 1e-6 |
| steer/floor_active | 1 if S < omega_floor, i.e. the 0.02 floor set k (exp map only), else 0 |
| steer/omega_scale | S, the |Ω| normaliser (max or quantile) used for this call |
| steer/omega_abs_p50 | median |Ω| |
| steer/omega_abs_p90 | 0.9-quantile of |Ω| |
| steer/omega_abs_p99 | 0.99-quantile of |Ω| |
| steer/omega_abs_max [max] | largest |Ω| |
| steer/frac_<quadrant> | frac in the quadrant: pos_high, pos_low, neg_high, neg_low (see ``QUADRANTS``) |
| steer/omega_sum_<quadrant> | Σ Ω over the quadrant / n_tokens (the quadrant's signed share of the estimate) |
| clip_cov/candidates [sum] | unclipped tokens with cov_lb < Cov < cov_ub |
| clip_cov/tokens_touched [sum] | tokens detached |
| clip_cov/frac_touched | frac detached |
| kl_cov/tokens_touched [sum] | tokens penalised |
| kl_cov/abs_kl | mean |log π − log π_old| (verl's kl_cov ``ppo_kl``) |
| fork_tokens/threshold | the entropy threshold used |
| fork_tokens/frac_kept | frac with H ≥ threshold (keeping their gradient) |
| fork_tokens/tokens_touched [sum] | tokens masked out |
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.interventions import (
    Metrics,
    TokenBatch,
    clip_cov,
    fork_batch_stats,
    fork_tokens,
    frac,
    kl_cov,
    ppo,
    steer,
    steer_batch_stats,
)
from steer_bench.algos.registry import check_params, keyword_params, lookup
from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogate import Surrogate, aggregate, clipped_surrogate


@dataclass(frozen=True)
class PolicyLoss:
    """A registered intervention and what it needs from the trainer."""

    fn: Callable[..., tuple[Tensor, Metrics]]
    needs_entropy: bool = False  # the current policy's entropy (its value; a gradient only for the bonus)
    needs_old_entropy: bool = False  # the rollout / old policy's entropy
    batch_stats: Callable[..., dict[str, Any]] | None = None  # mini-batch statistics for scope=mini


# The policy losses, by the name used in configs/methods/*.yaml.
POLICY_LOSSES: dict[str, PolicyLoss] = {
    "ppo": PolicyLoss(ppo),
    "steer": PolicyLoss(steer, needs_old_entropy=True, batch_stats=steer_batch_stats),
    "clip_cov": PolicyLoss(clip_cov),
    "kl_cov": PolicyLoss(kl_cov),
    "fork_tokens": PolicyLoss(fork_tokens, needs_entropy=True, batch_stats=fork_batch_stats),
}


def _lookup(name: str, params: dict[str, Any]) -> PolicyLoss:
    entry = lookup("policy loss", POLICY_LOSSES, name)
    check_params("policy loss", name, entry.fn, params)
    return entry


def policy_loss(
    name: str,
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    entropy: Tensor | None = None,
    *,
    old_entropy: Tensor | None = None,
    clip_low: float | None,
    clip_high: float | None,
    clip_c: float | None,
    agg: str,
    entropy_coef: float,
    batch_tokens: int | None = None,
    batch_seqs: int | None = None,
    max_response_len: int | None = None,
    omega_range: tuple[float, float] | None = None,
    entropy_threshold: float | None = None,
    generator: torch.Generator | None = None,
    **params: Any,
) -> tuple[Tensor, Metrics]:
    """The scalar loss of one call (a micro-batch) and its metrics (see the module docstring).

    Tensors (B, T) over response tokens: ``log_probs`` (current policy, with grad), ``old_log_probs``,
    ``advantages``, ``response_mask`` (0 on padding), ``entropy`` (current policy; needs grad only for the
    bonus), ``old_entropy`` (rollout policy). Only ``log_probs`` and ``entropy`` receive gradients; the
    others are detached here.
    Clip settings and ``agg`` / ``entropy_coef``: see :func:`clipped_surrogate`, :func:`aggregate`.
    Mini-batch totals for exact gradient accumulation, the same for every micro-batch call of a mini-batch:
    ``batch_tokens`` (valid tokens), ``batch_seqs`` (non-empty sequences), and :func:`mini_batch_stats`'s
    ``omega_range`` (STEER scope=mini) / ``entropy_threshold`` (fork_tokens scope=mini); None = this call's
    own. ``max_response_len``: Dr. GRPO's constant for seq-mean-token-sum-norm (the generation budget).
    ``params``: the intervention's keyword-only hyperparameters.
    """
    entry = _lookup(name, params)
    mask = response_mask.bool()
    if entry.needs_entropy and entropy is None:
        raise ValueError(f"policy loss {name!r} needs the current policy's entropy (entropy=...)")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs the current policy's entropy with gradient (entropy=...)")
    adv, old_logp = advantages.detach(), old_log_probs.detach()
    surr = clipped_surrogate(log_probs, old_logp, adv, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c)
    batch = TokenBatch(
        log_probs,
        old_logp,
        adv,
        mask,
        entropy,
        None if old_entropy is None else old_entropy.detach(),
        omega_range,
        entropy_threshold,
        generator,
    )
    token_loss, extra = entry.fn(surr, batch, **params)
    totals = {"batch_tokens": batch_tokens, "batch_seqs": batch_seqs, "max_response_len": max_response_len}
    pg = aggregate(token_loss, mask, agg=agg, **totals)
    loss = pg
    with torch.no_grad():
        metrics = _shared_metrics(surr, batch, pg)
    if entropy_coef != 0:
        bonus = entropy_coef * aggregate(entropy, mask, agg=agg, **totals)
        loss = loss - bonus
        metrics["loss/entropy_bonus"] = bonus.detach()
    metrics.update({k: v.detach() for k, v in extra.items()})
    return loss, metrics


def _shared_metrics(s: Surrogate, b: TokenBatch, pg: Tensor) -> Metrics:
    mask = b.mask
    out = {
        "loss/n_tokens": mask.sum().float(),
        "loss/pg": pg.detach(),
        "loss/clipfrac": frac(s.clipped, mask),
        "loss/clipfrac_high": frac(s.clipped_high, mask),
        "loss/clipfrac_low": frac(s.clipped_low, mask),
        "loss/clipfrac_dual": frac(s.clipped_dual, mask),
        "loss/approx_kl": masked_mean(b.old_log_probs - b.log_probs.detach(), mask),
        "loss/ratio_max": s.ratio[mask].max() if mask.any() else torch.tensor(1.0),
    }
    if b.entropy is not None:
        out["loss/entropy"] = masked_mean(b.entropy.detach(), mask)
    if b.old_entropy is not None:
        out["loss/old_entropy"] = masked_mean(b.old_entropy, mask)
    return out


def mini_batch_stats(
    name: str,
    log_probs: Tensor,
    old_log_probs: Tensor,
    advantages: Tensor,
    response_mask: Tensor,
    entropy: Tensor | None = None,
    *,
    old_entropy: Tensor | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Statistics a method normalises over the whole mini-batch, to pass to every micro-batch's :func:`policy_loss`.

    Call it (no gradient needed) on the whole mini-batch with the current policy's log-probs — and entropy,
    for fork_tokens — from a no-grad pass, when ``MethodConfig.needs_mini_stats``. Accepts the keyword
    arguments of :func:`policy_loss` (those the method does not use are ignored). Returns ``omega_range``
    (steer, scope=mini) or ``entropy_threshold`` (fork_tokens, scope=mini); {} for every other method.
    The token / sequence totals (``batch_tokens``, ``batch_seqs``) are the trainer's to count: valid tokens
    and non-empty sequences of the mini-batch over all ranks.
    """
    hook = lookup("policy loss", POLICY_LOSSES, name).batch_stats
    if hook is None:
        return {}
    wanted = {k: params[k] for k in keyword_params(hook) if k in params}
    with torch.no_grad():
        batch = TokenBatch(
            log_probs.detach(),
            old_log_probs.detach(),
            advantages.detach(),
            response_mask.bool(),
            None if entropy is None else entropy.detach(),
            old_entropy,
        )
        return hook(batch, **wanted)

"""The RLVR objective library: pure torch over (B, T) response-token tensors with a mask; no I/O.

Trainer contract, per rollout and per mini-batch / micro-batch (gradient accumulation)::

    adv = compute_advantages(m.advantage.estimator, scores, group_ids, mask, entropy=old_entropy,
                             **m.advantage_params())
    totals = {"batch_tokens": ..., "batch_seqs": ...}       # valid tokens / non-empty rows of the mini-batch
    extra = mini_batch_stats(m.loss.name, logp_nograd, old_logp, adv, mask, entropy=..., old_entropy=...,
                             **m.loss_params()) if m.needs_mini_stats else {}   # whole mini-batch, no grad
    loss, metrics = policy_loss(m.loss.name, logp, old_logp, adv, mask, entropy=..., old_entropy=...,
                                **m.loss_params(), **totals, **extra)          # per micro-batch; backward
    reduce_metrics([metrics, ...])                           # combine the micro-batches' metrics

Modules: ``advantages`` (estimators), ``surrogate`` (dual-clip PPO, aggregation), ``interventions`` (the
per-token pieces of each method), ``losses`` (their registry, ``policy_loss`` and its metric keys), ``steer``
(λ), ``entropy`` (entropy from logits, Ω, covariance, quadrants), ``stats`` (masked statistics, metric
reductions), ``registry`` (hyperparameter checks).
"""

from steer_bench.algos.advantages import ADVANTAGES, GROUP_ESTIMATORS, compute_advantages, estimator_needs_entropy
from steer_bench.algos.entropy import (
    QUADRANTS,
    covariance,
    entropy_from_logits,
    logprobs_and_entropy,
    omega,
    quadrant,
)
from steer_bench.algos.losses import POLICY_LOSSES, mini_batch_stats, policy_loss
from steer_bench.algos.stats import METRIC_REDUCTIONS, masked_mean, masked_quantile, reduce_metrics
from steer_bench.algos.steer import omega_range, steer_weights
from steer_bench.algos.surrogate import AGG_MODES, aggregate, clipped_surrogate

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "GROUP_ESTIMATORS",
    "METRIC_REDUCTIONS",
    "POLICY_LOSSES",
    "QUADRANTS",
    "aggregate",
    "clipped_surrogate",
    "compute_advantages",
    "covariance",
    "entropy_from_logits",
    "estimator_needs_entropy",
    "logprobs_and_entropy",
    "masked_mean",
    "masked_quantile",
    "mini_batch_stats",
    "omega",
    "omega_range",
    "policy_loss",
    "quadrant",
    "reduce_metrics",
    "steer_weights",
]

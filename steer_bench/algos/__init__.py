"""The RLVR objective library: pure torch over (B, T) response-token tensors with a mask; no I/O.

A preset resolves once into a :class:`Method` (:func:`make_method`; the config layer does it for
``configs/methods/*.yaml``), which every caller — the trainer, the reasoning-tree testbed, the load-time
dry run — uses the same way, per rollout and per mini-batch / micro-batch (gradient accumulation)::

    adv = m.advantages(scores, group_ids, mask, old_entropy=old_entropy)         # (B, T)
    step = m.step_stats(old_entropy, mask, reduce)    # once per step, all ranks; None unless m.needs.step_stats
    stats = m.mini_batch_stats(TokenBatch(logp_nograd, old_logp, adv, mask, entropy, old_entropy),
                               reduce)              # whole mini-batch, all ranks; None unless m.needs.mini_batch_stats
    loss, metrics = m.loss(TokenBatch(logp, old_logp, adv, mask, entropy, old_entropy),
                           Totals(batch_tokens, batch_seqs, max_response_len), step if m.needs.step_stats else stats)
    m.reduce_metrics([metrics, ...])                  # combine the micro-batches' metrics by declared rules

Modules: ``base`` (what a method file defines: :class:`Intervention`, :class:`TokenBatch`, metrics,
discovery), ``method`` (:class:`Method`, the shared metrics, the dry run), ``interventions/`` (one file per
token-level intervention), ``advantages`` (estimators), ``surrogate`` (dual-clip PPO, aggregation),
``entropy`` (entropy from logits, Ω, covariance, quadrants), ``stats`` (masked statistics, metric
reductions), ``registry`` (hyperparameter checks).
"""

from steer_bench.algos.advantages import (
    ADVANTAGES,
    GROUP_ESTIMATORS,
    compute_advantages,
    estimator_needs_entropy,
    estimator_needs_step,
)
from steer_bench.algos.base import (
    INTERVENTIONS,
    Intervention,
    Metric,
    Reduce,
    TokenBatch,
    Totals,
    discover,
    intervention_class,
    local_reduce,
)
from steer_bench.algos.entropy import (
    QUADRANTS,
    covariance,
    entropy_from_logits,
    logprobs_and_entropy,
    omega,
    quadrant,
)
from steer_bench.algos.method import SHARED_METRICS, Method, Needs, make_method, metric_table
from steer_bench.algos.stats import masked_mean, masked_quantile, reduce_metrics
from steer_bench.algos.surrogate import AGG_MODES, aggregate, clipped_surrogate

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "GROUP_ESTIMATORS",
    "INTERVENTIONS",
    "QUADRANTS",
    "SHARED_METRICS",
    "Intervention",
    "Method",
    "Metric",
    "Needs",
    "Reduce",
    "TokenBatch",
    "Totals",
    "aggregate",
    "clipped_surrogate",
    "compute_advantages",
    "covariance",
    "discover",
    "entropy_from_logits",
    "estimator_needs_entropy",
    "estimator_needs_step",
    "intervention_class",
    "local_reduce",
    "logprobs_and_entropy",
    "make_method",
    "masked_mean",
    "masked_quantile",
    "metric_table",
    "omega",
    "quadrant",
    "reduce_metrics",
]

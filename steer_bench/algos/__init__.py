"""The RLVR objective library: pure torch over (B, T) response-token tensors with a mask; no I/O.

A method is built from parts (:mod:`~steer_bench.algos.registry`: an advantage estimator, a surrogate, a
token-level intervention, optionally a rollout correction, regularisers and an entropy controller), each a frozen
keyword-only dataclass that a preset section names; the config layer builds the :class:`Method` once per run from
``configs/methods/*.yaml``, and every caller — the trainer, the reasoning-tree testbed, the load-time dry run —
uses it the same way, per rollout and per mini-batch / micro-batch (gradient accumulation)::

    adv = m.advantages(scores, group_ids, mask, old_entropy=old_entropy)         # (B, T)
    step = m.step_stats(old_entropy, mask, reduce)    # once per step, all ranks; None unless m.needs.step_stats
    stats = m.mini_batch_stats(TokenBatch(logp_nograd, old_logp, adv, mask, entropy, old_entropy),
                               reduce)              # whole mini-batch, all ranks; None unless m.needs.mini_batch_stats
    loss, metrics = m.loss(TokenBatch(logp, old_logp, adv, mask, entropy, old_entropy),
                           Totals(batch_tokens, batch_seqs, max_response_len), step if m.needs.step_stats else stats)
    m.reduce_metrics([metrics, ...])                  # combine the micro-batches' metrics by declared rules

Modules: ``registry`` (the one registry of parts and the one hyperparameter check), ``base`` (what a method
file defines: :class:`Intervention`, :class:`TokenBatch`), ``method`` (:class:`Method`, the shared metrics, the
dry run), ``interventions/`` (one file per token-level intervention), ``advantages`` (estimators),
``surrogates`` (dual-clip PPO and its replacements, aggregation), ``rollout_correction``, ``regularisers``
(terms added to the loss: the entropy bonus), ``entropy_control`` and ``entropic`` (controllers; EntroPIC's
term), ``entropy`` (entropy from logits, Ω, covariance, quadrants), ``stats`` (masked statistics, metric
reductions).
"""

from steer_bench.algos import interventions
from steer_bench.algos.advantages import ADVANTAGES, Advantage, compute_advantages
from steer_bench.algos.base import Intervention, Reduce, TokenBatch, Totals, local_reduce
from steer_bench.algos.entropy import (
    QUADRANTS,
    covariance,
    entropy_from_logits,
    logprobs_and_entropy,
    omega,
    quadrant,
)
from steer_bench.algos.entropy_control import Controller
from steer_bench.algos.method import SHARED_METRICS, Method, Needs, metric_table
from steer_bench.algos.registry import REGISTRY, ROLES, Metric, Part, build, lookup, register
from steer_bench.algos.regularisers import EntropyBonus, Regulariser, entropy_bonus
from steer_bench.algos.stats import masked_mean, masked_quantile, reduce_metrics
from steer_bench.algos.surrogates import AGG_MODES, PolicySurrogate, Surrogate, aggregate, clipped_surrogate

INTERVENTIONS = REGISTRY["intervention"]  # filled by importing ``interventions`` above

__all__ = [
    "ADVANTAGES",
    "AGG_MODES",
    "INTERVENTIONS",
    "QUADRANTS",
    "REGISTRY",
    "ROLES",
    "SHARED_METRICS",
    "Advantage",
    "Controller",
    "EntropyBonus",
    "Intervention",
    "Method",
    "Metric",
    "Needs",
    "Part",
    "PolicySurrogate",
    "Reduce",
    "Regulariser",
    "Surrogate",
    "TokenBatch",
    "Totals",
    "aggregate",
    "build",
    "clipped_surrogate",
    "compute_advantages",
    "covariance",
    "entropy_bonus",
    "entropy_from_logits",
    "interventions",
    "local_reduce",
    "logprobs_and_entropy",
    "lookup",
    "masked_mean",
    "masked_quantile",
    "metric_table",
    "omega",
    "quadrant",
    "reduce_metrics",
    "register",
]

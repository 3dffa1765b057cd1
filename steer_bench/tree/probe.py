"""Entropy-change probe: one vanilla policy-gradient step on a copy of the table, measured exactly.

In the tabular policy a state's entropy depends only on its own logit row, so the entropy change of every
state across one SGD step is measured exactly, ΔH_s = H(z_s + Δz_s) − H(z_s), and compared with the
estimators, each summed over the tokens drawn at that state and scaled by the step's −η/N (token-mean over
N tokens):

- ``paper``       Ω_t = (A/π_old)·p(1−p)(ln p + H)        (the released STEER estimate, ``algos.omega``)
- ``first_order`` p·Ω_t                                   (``algos.omega(form="first_order")``)
- ``cov``         Cov_t = (A_t − Ā)(log π_t − mean log π)  (Cui et al., ``algos.covariance``)
- ``linear``      ∇_z H(s)·Δz_s, the exact linearisation of the step (autograd; the O(η²) reference)

The step is the plain surrogate −A·r on-policy (r = 1, so no clip binds): the setting Ω was derived for.
The loop probes twice: at the training step size (how well each estimate predicts a real update's entropy
change) and at a 1000× smaller one (the first-order regime the estimates are derived for, where ``linear``
is exact to ~1e-3).
Each token's share of the linearisation, ∇H(s_t)·Δz_t with Δz_t its own gradient term, splits the entropy
change by quadrant (sign of A × sign of ln p + H, ``algos.quadrant``).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from steer_bench.algos import (
    QUADRANTS,
    Method,
    TokenBatch,
    covariance,
    entropy_from_logits,
    logprobs_and_entropy,
    omega,
)
from steer_bench.algos import quadrant as quadrant_of
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.interventions.ppo import PPO
from steer_bench.analysis.stats import (
    agreement,  # one definition of the estimator statistics, shared with the LM analysis
)

# The vanilla policy-gradient loss L = −A·r with token-mean (no clipping, no bonus): the probe's step.


@functools.cache
def vanilla() -> Method:
    """The unclipped policy gradient −A·r (token mean): the loss the first-order analysis differentiates."""
    grpo = Grpo(norm_by_std=True, eps=1e-6)
    no_clip = {"clip_low": None, "clip_high": None, "clip_c": None}
    return Method(name="vanilla", advantage=grpo, intervention=PPO(), agg="token-mean", **no_clip)


ESTIMATORS = ("paper", "first_order", "cov", "linear")


@dataclass(frozen=True)
class ProbeResult:
    """Per visited state: the exact ΔH (n,) and each estimator's prediction (n,); per token: quadrant labels
    (B, T) and each token's first-order entropy change (B, T)."""

    delta_h: np.ndarray
    predictions: dict[str, np.ndarray]
    quadrant: torch.Tensor
    token_change: torch.Tensor


def state_entropy(table: torch.Tensor) -> torch.Tensor:
    """H of every row of a logit table (S, K) -> (S,)."""
    return entropy_from_logits(table.unsqueeze(0))[0]


def probe_step(
    table: torch.Tensor, state_ids: torch.Tensor, responses: torch.Tensor, adv: torch.Tensor, *, lrs: Sequence[float]
) -> list[ProbeResult]:
    """One SGD step of each size in ``lrs`` on the vanilla loss of the tokens (state_ids (B, T), responses
    (B, T), adv (B, T)) applied to a copy of ``table`` (S, K); nothing is modified. One result per size."""
    mask = torch.ones_like(adv, dtype=torch.bool)
    z0 = table.detach()
    logits = z0[state_ids].requires_grad_(True)  # a leaf per token: its grad is that token's own term
    logp, ent = logprobs_and_entropy(logits, responses, temperature=1.0)
    loss, _ = vanilla().loss(TokenBatch(logp, logp.detach(), adv, mask))
    (token_grad,) = torch.autograd.grad(loss, logits)
    flat = state_ids.flatten()
    unit_step = torch.zeros_like(z0).index_add_(0, flat, -token_grad.flatten(0, 1))  # Δz of the table per unit η
    z = z0.clone().requires_grad_(True)
    h0 = state_entropy(z)
    (grad_h,) = torch.autograd.grad(h0.sum(), z)  # row s: ∂H(s)/∂z_s (rows are independent)
    unit_change = -(grad_h[state_ids] * token_grad).sum(-1)  # (B, T): each token's first-order ΔH per unit η

    logp, ent = logp.detach(), ent.detach()
    per_token = {  # per unit η; the estimates carry the step's −1/N (token-mean over N tokens)
        "paper": omega(adv, logp, logp, ent, form="paper") / -mask.sum(),
        "first_order": omega(adv, logp, logp, ent, form="first_order") / -mask.sum(),
        "cov": covariance(adv, logp, mask) / -mask.sum(),
        "linear": unit_change,
    }
    visited = state_ids[adv != 0].unique()  # states with no signal change by exactly 0: trivially predicted
    zeros = torch.zeros(len(z0), dtype=torch.float64)
    per_state = {name: zeros.index_add(0, flat, v.flatten())[visited] for name, v in per_token.items()}
    label = quadrant_of(adv, logp, ent, mask)
    results = []
    for lr in lrs:
        delta_h = state_entropy(z0 + lr * unit_step) - h0.detach()
        predictions = {name: (lr * v).numpy() for name, v in per_state.items()}
        results.append(ProbeResult(delta_h[visited].numpy(), predictions, label, lr * unit_change))
    return results


def probe_metrics(result: ProbeResult, prefix: str, *, quadrants: bool) -> dict[str, float]:
    """Flat, MLflow-safe metrics of one probe: ``<prefix>/<estimator>/<stat>``, and with ``quadrants``:

    ``quadrant/<q>/tokens``: share of the labelled tokens (A ≠ 0) in quadrant q; ``quadrant/<q>/dh``: the
    signed sum of its tokens' first-order entropy changes over Σ_t |change_t| (in [−1, 1]; the quadrants'
    |shares| add up to 1 when every quadrant's tokens move entropy the same way).
    """
    dh = result.delta_h
    out = {f"{prefix}/dh_mean": float(dh.mean()) if len(dh) else float("nan"), f"{prefix}/states": float(len(dh))}
    for name, pred in result.predictions.items():
        for stat, value in agreement(pred, dh).items():
            out[f"{prefix}/{name}/{stat}"] = value
    if not quadrants:
        return out
    labelled = int((result.quadrant > 0).sum())
    total_abs = float(result.token_change.abs().sum())
    for q, name in QUADRANTS.items():
        inq = result.quadrant == q
        # no token with A ≠ 0 (every group all-correct or all-wrong): no shares, NaN rather than 0
        out[f"quadrant/{name}/tokens"] = float(inq.sum()) / labelled if labelled else float("nan")
        out[f"quadrant/{name}/dh"] = float(result.token_change[inq].sum()) / total_abs if total_abs else float("nan")
    return out

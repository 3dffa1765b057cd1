"""STARE (arXiv 2606.19236; hp-luo/STARE ``verl/trainer/ppo/core_algos.py`` ``compute_stare_token_weights``;
``docs/methods.md`` §M32).

    s_t   = −log π_θ(o_t)                    (surprisal of the sampled token, current policy, detached)
    L+    = the ⌈P·|T+|⌉ (≥ 1) tokens of largest s among T+ = {valid, A > 0}
    L−    = the same among T− = {valid, A < 0}                                    (variant C2 only)
    gate  = 1[H̄ < H_tgt],  H̄ = mean π_old entropy over the valid tokens (``gate_scope``)
    ω     = W on L+, M on L− (C2), 1 elsewhere, when the gate is on; ω ≡ 1 when it is off
    L_method = ω ⊙ L                                                              (all (B, T))

Selection is over the tokens of one call (the release computes it inside the per-micro-batch policy loss).
``gate_scope: step`` (the release) takes H̄ over every valid token of the step batch on every rank, from
π_old's entropy, once before the update (no extra pass): hp-luo/STARE ``recipe/STARE/stare_ray_trainer.py``
``compute_kl_related_metrics`` — ``entropy_agg = agg_loss(loss_mat=entropys, ...)`` over the old-log-prob
pass's entropies, then ``self._update_stare_controller(batch, metrics, entropy_agg...)`` sets
``gate_on = 1[H_bar_k < H_tgt]`` for the step. The release aggregates with the run's ``loss_agg_mode``
(token-mean in its script); we take the token mean whatever the preset's ``agg`` (our choice).
``micro`` takes H̄ over the call's own tokens (our option).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, Reduce, TokenBatch, frac
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogates import Surrogate

VARIANTS = ("O1", "C2")
GATE_SCOPES = ("step", "micro")  # H̄ over the step batch before the update (release) | over each call


def top_surprisal(surprisal: Tensor, candidates: Tensor, top_frac: float) -> Tensor:
    """Bool (B, T): the max(1, ⌈top_frac·n⌉) candidates of largest surprisal (n = number of candidates; none
    when n = 0). ⌈·⌉ as released: ``int(n·P + 0.999999)``."""
    selected = torch.zeros_like(candidates)
    n = int(candidates.sum())
    if n == 0 or top_frac <= 0:
        return selected
    k = min(max(1, int(n * top_frac + 0.999999)), n)
    idx = candidates.flatten().nonzero().squeeze(-1)
    top = surprisal.flatten()[idx].topk(k).indices
    selected.view(-1)[idx[top]] = True
    return selected


@register
@dataclass(frozen=True, kw_only=True)
class Stare(Intervention):
    """ω ⊙ L with ω from advantage sign and surprisal rank, gated by the batch entropy (module docstring)."""

    name = "stare"
    needs_old_entropy = True
    metrics = {
        "stare/gate_on": Metric("1 if H̄ < H_tgt (the reweighting acts), else 0"),
        "stare/gate_entropy": Metric(
            "H̄, the token-mean π_old full-vocabulary entropy (at τ) the gate compared with H_tgt"
        ),
        "stare/frac_pos_selected": Metric("fraction of the valid tokens in L+ (weight W when the gate is on)"),
        "stare/frac_neg_selected": Metric("fraction of the valid tokens in L− (C2: weight M when the gate is on)"),
        "stare/weight_mean": Metric("mean ω over the valid tokens"),
    }
    variant: str  # O1 (W on L+ only) | C2 (also M on L−)
    top_frac: float  # P: the share of each advantage-sign set reweighted (release 0.1)
    weight_pos: float  # W > 0 (release 1.1)
    weight_neg: float  # M > 0, used by C2 only (release 0.9)
    target_entropy: float  # H_tgt (release 0.3)
    gate_scope: str  # step (release) | micro

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"STARE variant must be one of {VARIANTS}, got {self.variant!r}")
        if not 0 <= self.top_frac <= 1:
            raise ValueError(f"STARE top_frac must be in [0, 1], got {self.top_frac}")
        if not (self.weight_pos > 0 and self.weight_neg > 0):
            raise ValueError(f"STARE weights must be > 0, got W={self.weight_pos}, M={self.weight_neg}")
        if self.gate_scope not in GATE_SCOPES:
            raise ValueError(f"STARE gate_scope must be one of {GATE_SCOPES}, got {self.gate_scope!r}")

    @property
    def uses_step_stats(self) -> bool:
        return self.gate_scope == "step"

    def step_stats(self, old_entropy: Tensor, mask: Tensor, reduce: Reduce) -> float:
        """H̄: π_old's mean entropy over the valid tokens of the step batch, every rank (sums in float64)."""
        m = mask.to(torch.float64)
        totals = reduce(torch.stack([(old_entropy.to(torch.float64) * m).sum(), m.sum()]), "sum")
        return float(totals[0] / totals[1].clamp(min=1))

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: float | None) -> tuple[Tensor, Metrics]:
        assert batch.old_entropy is not None
        h = float(masked_mean(batch.old_entropy.double(), batch.mask)) if stats is None else stats
        gate = h < self.target_entropy
        surprisal = -batch.log_probs.detach()
        valid, adv = batch.mask, batch.advantages
        l_pos = top_surprisal(surprisal, valid & (adv > 0), self.top_frac)
        l_neg = top_surprisal(surprisal, valid & (adv < 0), self.top_frac) if self.variant == "C2" else None
        omega = torch.ones_like(surrogate.loss)
        if gate:
            omega = torch.where(l_pos, self.weight_pos, omega)
            if l_neg is not None:
                omega = torch.where(l_neg, self.weight_neg, omega)
        metrics = {
            "stare/gate_on": torch.tensor(float(gate)),
            "stare/gate_entropy": torch.tensor(h),
            "stare/frac_pos_selected": frac(l_pos, valid),
            "stare/frac_neg_selected": frac(l_neg, valid) if l_neg is not None else torch.tensor(0.0),
            "stare/weight_mean": masked_mean(omega.detach().float(), valid),
        }
        return surrogate.loss * omega, metrics

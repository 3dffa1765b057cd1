"""EntroPIC: entropy stabilisation with proportional–integral control (Yang et al., arXiv 2511.15248): a
controller whose state crosses steps (:class:`EntroPIC`) and the regulariser whose coefficient it sets
(:class:`EntroPICTerm`, the confident-token term).

Source: the official release yk7333/EntroPIC (commit 2470730c): ``dp_actor.py``
``EntroPICDataParallelPPOActor.update_policy`` (the controller), ``core_algos.py``
``compute_policy_loss_entropic`` (the loss), ``run_entropic.sh`` and ``config/entropic.yaml`` (the values).

The controller (step k; H_k the mean token entropy, e_k = H_k − H*)::

    α_k     = clip(K_p · e_k + K_i · I_k, α_min, α_max)       I_0 = 0            (release: np.clip(·, −1, 1))
    I_{k+1} = I_k + e_k

The regulariser's term of a call (r = exp(clamp(log π − log π_old, −20, 20)), as the surrogate's ratio, with
gradient), added to the loss (:mod:`~steer_bench.algos.regularisers`)::

    term = α_k · agg_{M_high}(−r · |A|)          M_high = mask ∧ [π > p_high]     (p_high = 0.95)

agg_{M_high} is the aggregation over the high-probability tokens only (token-mean: Σ_{M_high}(−r·|A|) / |M_high|,
the release's ``agg_loss(..., loss_mask=prob_mask)``); a call without such tokens adds 0. Entropy above the target
(α > 0) raises the probability of the confident tokens whatever the advantage's sign (entropy falls); below it
(α < 0) lowers them (entropy rises). The paper describes this as re-weighting positive and negative samples;
the release weights |A| on the high-probability tokens of both signs, which we follow.

Shapes: log-probs, advantages, mask (B, T); α a float. Hyperparameters (the preset's ``loss.entropic``,
keyword-only): the controller's ``target`` H*, ``kp`` K_p, ``ki`` K_i, ``alpha_min`` / ``alpha_max`` (the clip);
the term's ``high_prob`` p_high (the config layer splits the section, :func:`~steer_bench.config.method.control`).
Values: run_entropic.sh ``target_entropy=0.1``, ``entropy_control_p=1``, ``entropy_control_i=0.01``;
``high_prob_thresh=0.95`` and the clip ±1 are constants of the release.

Our choices (the release differs):
* H_k is the mean token entropy of step k's rollout under π_old over every valid token of every rank, known
  before the update, and the controller steps once per training step, so α and I are equal on every rank. The
  release measures the current policy's entropy per micro-batch on each rank (its ``entropy_loss_item``, not
  all-reduced) and updates I after every micro-batch by e · (micro-batch rows / mini-batch rows), i.e. by e per
  mini-batch; with run_entropic.sh's one mini-batch per step (train_batch_size = ppo_mini_batch_size = 512) that is
  e per step, as here, and on-policy the first micro-batch's current policy is π_old.
* Under gradient accumulation the term of a call is scaled by the call's share of the mini-batch's valid tokens
  (``Totals.batch_tokens``; 1 without totals); the release scales by the micro-batch's share of rows
  (``loss_scale_factor``). With one call per mini-batch the two agree.
* Without a value from the controller (the load-time dry run, a direct call) α = 0.

The trainer keeps I in its checkpointed state (``TrainState.entropy_coef``, the controller state slot), so a
resumed run continues it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.base import Metrics, TokenBatch, Totals, frac
from steer_bench.algos.entropy_control import Controller
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.regularisers import Regulariser

METRICS: dict[str, Metric] = {
    "loss/entropic_alpha": Metric("EntroPIC's α of the step (the controller's output)"),
}
TERM_METRICS: dict[str, Metric] = {
    "loss/entropic_adjust": Metric("α·agg_high(−r·|A|), this call's share, added to the loss", "sum"),
    "loss/entropic_high_frac": Metric("fraction of valid tokens with π > p_high (the tokens the term weights)"),
}


@register
@dataclass(frozen=True, kw_only=True)
class EntroPIC(Controller):
    """The preset's ``loss.entropic`` less ``high_prob`` (module docstring); the state I lives with the caller.
    Its value α is the coefficient of :class:`EntroPICTerm`; the entropy bonus stays the preset's β."""

    name = "entropic"
    drives = "entropic_term"
    value_key = "loss/entropic_alpha"
    metrics = METRICS

    target: float  # H*, nats (release: target_entropy)
    kp: float  # K_p (release: entropy_control_p)
    ki: float  # K_i (release: entropy_control_i)
    alpha_min: float  # the clip of α (release: −1.0)
    alpha_max: float  # (release: 1.0)

    def __post_init__(self) -> None:
        if not self.alpha_min <= 0 <= self.alpha_max:
            raise ValueError(f"entropic needs alpha_min <= 0 <= alpha_max, got {self.alpha_min}, {self.alpha_max}")
        if self.kp < 0 or self.ki < 0:
            raise ValueError(f"entropic gains must be >= 0, got kp={self.kp}, ki={self.ki}")

    @property
    def initial(self) -> float:
        return 0.0

    def step(
        self, state: float | None, entropy: float | None, *, step: int = 0, total_steps: int = 1
    ) -> tuple[float, float]:
        """(α_k, I_{k+1}) from I_k (None: I_0 = 0) and H_k."""
        assert entropy is not None
        i = 0.0 if state is None else state
        err = entropy - self.target
        alpha = min(max(self.kp * err + self.ki * i, self.alpha_min), self.alpha_max)
        return alpha, i + err


@register
@dataclass(frozen=True, kw_only=True)
class EntroPICTerm(Regulariser):
    """EntroPIC's confident-token term α·agg_high(−r·|A|)·share (module docstring): ``coef`` is α when no
    controller sets it (the preset's: 0, the release's α before the first step); token-mean only."""

    name = "entropic_term"
    metrics = TERM_METRICS

    high_prob: float  # p_high: tokens with π > p_high get the term (release: high_prob_thresh 0.95)

    def __post_init__(self) -> None:
        if not 0 < self.high_prob < 1:
            raise ValueError(f"entropic high_prob must be in (0, 1), got {self.high_prob}")

    def check_agg(self, agg: str) -> None:
        if agg != "token-mean":
            raise ValueError(f"entropic is implemented for agg token-mean (the release's), got {agg!r}")

    def term(self, batch: TokenBatch, coef: float, *, agg: str, totals: Totals) -> tuple[Tensor, Metrics]:
        """α·agg_high(−r·|A|)·share, share the call's part of the mini-batch's valid tokens (1 without totals)."""
        share = torch.ones(()) if totals.batch_tokens is None else batch.mask.sum() / totals.batch_tokens
        high = batch.mask & (batch.log_probs.detach() > math.log(self.high_prob))
        ratio = torch.exp(torch.clamp(batch.log_probs - batch.old_log_probs, -20.0, 20.0))
        n_high = high.sum()
        term = (-ratio * batch.advantages.abs() * high).sum() / n_high.clamp(min=1)
        adj = coef * term * share
        return adj, {"loss/entropic_adjust": adj.detach(), "loss/entropic_high_frac": frac(high, batch.mask)}

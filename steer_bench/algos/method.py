"""A method, resolved once from its preset: an advantage estimator, a surrogate, one token-level intervention,
and optionally a rollout correction, regularisers and an entropy controller. The trainer, the reasoning-tree
testbed and the load-time dry run all call it the same way (see :mod:`steer_bench.algos`)::

    loss = agg(w · L_method) + Σ_j term_j          e.g. the entropy bonus's term −β·agg(H)

L is the preset's surrogate (:mod:`~steer_bench.algos.surrogates`; default the dual-clip
:func:`~steer_bench.algos.surrogates.clipped_surrogate`); the intervention turns it into L_method, and a rollout
correction, if any, weights it (w; 1 without). Each regulariser (:mod:`~steer_bench.algos.regularisers`) adds its
term with its coefficient; a controller, if any, sets by step the coefficient of the one regulariser it drives.
Every piece is a part (:mod:`steer_bench.algos.registry`): the preset's sections map onto them one to one.
Weights that remove tokens (clip_cov, fork_tokens) or shrink them (steer) never change the denominator of the
aggregation: it stays the count of valid tokens (as the release for λ, verl for clip_cov and TRL for the
forking-token mask). Per-call statistics are over the tokens of the call, i.e. per
micro-batch, as verl does. Decision: the ratio's log is clamped to [−20, 20] for every loss (verl clamps it in
``vanilla`` and STEER but not in clip_cov / kl_cov; it only matters for r > e^20).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from steer_bench.algos.advantages import Advantage
from steer_bench.algos.base import Intervention, Metrics, Reduce, TokenBatch, Totals, frac, local_reduce
from steer_bench.algos.entropy_control import Controller
from steer_bench.algos.registry import ROLES, Metric, Part, registered
from steer_bench.algos.regularisers import Regulariser, counts
from steer_bench.algos.rollout_correction import RolloutCorrection
from steer_bench.algos.stats import masked_mean, reduce_metrics
from steer_bench.algos.surrogates import AGG_MODES, DualClip, PolicySurrogate, Surrogate, aggregate

# The metrics every method returns (intervention metrics: each intervention's file).
SHARED_METRICS: dict[str, Metric] = {
    "loss/n_tokens": Metric("valid tokens in the call", "sum"),
    "loss/pg": Metric(
        "the policy-gradient part of the returned loss (this call's share of the mini-batch loss)", "sum"
    ),
    "loss/clipfrac": Metric("fraction where the PPO clip binds (L2 > L1), verl's pg_clipfrac"),
    "loss/clipfrac_high": Metric("fraction with r > 1 + ε_high and A > 0"),
    "loss/clipfrac_low": Metric("fraction with r < 1 − ε_low and A < 0"),
    "loss/clipfrac_dual": Metric("fraction where the dual clip binds (A < 0 and −A·r > −A·c)"),
    "loss/approx_kl": Metric("mean(log π_old − log π) (verl's ppo_kl)"),
    "loss/ratio_max": Metric("the largest ratio r", "max"),
    "loss/entropy": Metric(
        "token mean of the current policy's full-vocabulary entropy H (the trainer's: softmax(logits/τ) at the "
        "sampling temperature τ) over valid tokens (when given)"
    ),
    "loss/old_entropy": Metric("the same of π_old's full-vocabulary entropy at τ (when given)"),
}


@dataclass(frozen=True)
class Needs:
    """What the trainer must compute for this method."""

    groups: bool  # the advantage baseline is a group statistic: rollout.n ≥ 2
    entropy: bool  # the current policy's entropy in every loss call
    entropy_grad: bool  # ... with gradient (a regulariser of the entropy: the entropy bonus)
    old_entropy: bool  # π_old's entropy (STEER's Ω, entropy-shaped advantages)
    mini_batch_stats: bool  # one no-grad pass over each mini-batch for :meth:`Method.mini_batch_stats`
    step_stats: bool  # :meth:`Method.step_stats` once per step from π_old's entropy (no extra pass)


@dataclass(frozen=True, kw_only=True)
class Method:
    """A resolved preset: its parts and settings, every hyperparameter explicit. The config layer builds it once
    per run from ``configs/methods/<name>.yaml`` (:meth:`~steer_bench.config.method.MethodConfig.resolve`)."""

    name: str
    advantage: Advantage
    intervention: Intervention
    clip_low: float | None  # ε_low; None: no lower bound on the ratio
    clip_high: float | None  # ε_high; None: no upper bound
    clip_c: float | None  # dual-clip constant c > 1; None: no dual clip
    agg: str  # see steer_bench.algos.surrogates.aggregate
    surrogate: PolicySurrogate = dataclasses.field(default_factory=DualClip)
    rollout_correction: RolloutCorrection | None = None  # weight from π_old / π_rollout
    regularisers: tuple[Regulariser, ...] = ()  # terms added to the loss, in this order (the entropy bonus, ...)
    controller: Controller | None = None  # sets one regulariser's coefficient by step (adaptive entropy, ...)

    def __post_init__(self) -> None:
        if self.agg not in AGG_MODES:
            raise ValueError(f"unknown loss aggregation {self.agg!r}; valid: {', '.join(AGG_MODES)}")
        if self.clip_c is not None and self.clip_c <= 1:
            raise ValueError(f"dual-clip constant clip_c must be > 1 (or None to disable), got {self.clip_c}")
        names = [r.name for r in self.regularisers]
        if len(set(names)) < len(names):
            raise ValueError(f"a regulariser appears twice: {', '.join(names)}")
        for r in self.regularisers:
            r.check_agg(self.agg)
        if self.controller is not None and self.controller.drives not in names:
            raise ValueError(
                f"entropy controller {self.controller.name!r} drives regulariser {self.controller.drives!r}, "
                f"which the method lacks (its regularisers: {', '.join(names) or 'none'})"
            )

    @property
    def parts(self) -> tuple[Part, ...]:
        """The method's parts, in the order of the objective."""
        optional = (self.rollout_correction, *self.regularisers, self.controller)
        return (self.advantage, self.surrogate, self.intervention, *(p for p in optional if p is not None))

    @property
    def needs(self) -> Needs:
        iv, regs = self.intervention, self.regularisers
        return Needs(
            groups=self.advantage.groups,
            entropy=iv.needs_entropy or any(r.needs_entropy for r in regs),
            entropy_grad=any(r.needs_entropy_grad for r in regs),
            old_entropy=iv.needs_old_entropy or self.advantage.needs_old_entropy,
            mini_batch_stats=iv.uses_mini_batch_stats,
            step_stats=iv.uses_step_stats,
        )

    @property
    def has_controller(self) -> bool:
        """The caller must call :meth:`entropy_coef_step` every step and pass its value to :meth:`loss`."""
        return self.controller is not None

    @property
    def metrics(self) -> dict[str, Metric]:
        """Every key :meth:`loss` can return, with its meaning and reduction."""
        out = dict(SHARED_METRICS)
        for part in self.parts:
            out |= part.metrics
        return out

    def entropy_coef_step(
        self, state: float | None, entropy: float | None, *, step: int = 0, total_steps: int = 1
    ) -> tuple[float, float | None]:
        """(this step's controller value, the controller state to keep) from the kept state (None at the start),
        this step's mean π_old entropy over all ranks (read by controllers with ``reads_entropy``), the steps
        done before this one and the run's steps.

        The value is the coefficient of the regulariser the controller drives: the entropy bonus's (adaptive
        entropy: c_k; entropy_schedule: β_k, no state) or EntroPIC's term's α_k (state: the integral). Without a
        controller: (the entropy bonus's β, 0 without a bonus; state)."""
        if self.controller is None:
            return next((r.coef for r in self.regularisers if r.name == "entropy_bonus"), 0.0), state
        return self.controller.step(state, entropy, step=step, total_steps=total_steps)

    # ------------------------------------------------------------------------------------- the three calls
    def advantages(
        self,
        scores: Tensor,
        group_ids: Tensor,
        response_mask: Tensor,
        *,
        old_entropy: Tensor | None,
        step: int | None = None,
        total_steps: int | None = None,
        step_entropy: float | None = None,
    ) -> Tensor:
        """Token-level advantages (B, T), float32, 0 on padding (:class:`~steer_bench.algos.advantages.Advantage`);
        ``step`` (1-based) of ``total_steps`` and ``step_entropy`` only for estimators with a schedule."""
        return self.advantage(
            scores,
            group_ids,
            response_mask,
            entropy=old_entropy,
            step=step,
            total_steps=total_steps,
            step_entropy=step_entropy,
        )

    def mini_batch_stats(self, batch: TokenBatch, reduce: Reduce = local_reduce) -> Any:
        """The intervention's statistics over the whole mini-batch (all ranks, through ``reduce``), or None
        when the method has none. Call it on the mini-batch with the current policy's values from a no-grad pass."""
        if not self.needs.mini_batch_stats:
            return None
        self._check(batch)
        with torch.no_grad():
            return self.intervention.mini_batch_stats(batch.detached(), reduce)

    def step_stats(self, old_entropy: Tensor, mask: Tensor, reduce: Reduce = local_reduce) -> Any:
        """The intervention's statistics of π_old's entropy over the step batch (all ranks, through ``reduce``),
        or None when the method has none. Call it once per step, before the update; pass it as ``stats``."""
        if not self.needs.step_stats:
            return None
        with torch.no_grad():
            return self.intervention.step_stats(old_entropy.detach(), mask.bool(), reduce)

    def loss(
        self, batch: TokenBatch, totals: Totals | None = None, stats: Any = None, entropy_coef: float | None = None
    ) -> tuple[Tensor, Metrics]:
        """The scalar loss of one call (a micro-batch) and its metrics (0-d tensors without gradient).

        ``totals``: the mini-batch's counts for exact gradient accumulation (default: this call's own).
        ``stats``: :meth:`step_stats` of the step or :meth:`mini_batch_stats` of the mini-batch (None: the
        intervention's per-call statistics).
        ``entropy_coef``: this step's value from :meth:`entropy_coef_step`, the coefficient of the regulariser the
        controller drives (None: the controller's ``initial``: c_0 with the adaptive controller, β_0 with a
        schedule, α = 0 with EntroPIC); without a controller it is not read (each regulariser's own ``coef``).
        """
        self._check(batch)
        b = TokenBatch(
            batch.log_probs,
            batch.old_log_probs.detach(),
            batch.advantages.detach(),
            batch.mask.bool(),
            batch.entropy,
            None if batch.old_entropy is None else batch.old_entropy.detach(),
            batch.generator,
            None if batch.rollout_log_probs is None else batch.rollout_log_probs.detach(),
        )
        clip = {"clip_low": self.clip_low, "clip_high": self.clip_high, "clip_c": self.clip_c}
        surr = self.surrogate(b.log_probs, b.old_log_probs, b.advantages, b.mask, **clip)
        token_loss, extra = self.intervention.token_loss(surr, b, stats)
        if self.rollout_correction is not None:
            if b.rollout_log_probs is None:
                raise ValueError("rollout_correction needs the engine's log-probs (TokenBatch.rollout_log_probs)")
            weight, corr = self.rollout_correction.weights(b.old_log_probs, b.rollout_log_probs, b.mask)
            token_loss = token_loss * weight
            extra = {**extra, **corr}
        t = totals or Totals()
        pg = aggregate(token_loss, b.mask, agg=self.agg, **counts(t))
        loss = pg
        with torch.no_grad():
            metrics = _shared_metrics(surr, b, pg)
        driven: dict[str, float] = {}  # the controller's regulariser → this step's coefficient
        if (ctl := self.controller) is not None:
            driven[ctl.drives] = ctl.initial if entropy_coef is None else entropy_coef
            metrics[ctl.value_key] = torch.tensor(float(driven[ctl.drives]))
        for reg in self.regularisers:
            term, reg_metrics = reg.term(b, driven.get(reg.name, reg.coef), agg=self.agg, totals=t)
            if term is not None:
                loss = loss + term
            metrics.update(reg_metrics)
        metrics.update({k: v.detach() for k, v in extra.items()})
        return loss, metrics

    def reduce_metrics(self, calls: Sequence[Mapping[str, float | Tensor]]) -> dict[str, float]:
        """Combine the metrics of several :meth:`loss` calls (micro-batches) by each key's declared rule."""
        return reduce_metrics(calls, {k: m.reduce for k, m in self.metrics.items()})

    def _check(self, batch: TokenBatch) -> None:
        if self.needs.entropy and batch.entropy is None:
            part = next(p for p in (self.intervention, *self.regularisers) if p.needs_entropy)
            why = f"{ROLES[part.role]} {part.name!r}"
            raise ValueError(f"{why} needs the current policy's entropy (TokenBatch.entropy)")
        if self.intervention.needs_old_entropy and batch.old_entropy is None:
            raise ValueError(f"policy loss {self.intervention.name!r} needs π_old's entropy (TokenBatch.old_entropy)")


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


def dry_run(method: Method) -> None:
    """Run the method on a 2×3 batch: bad values fail at load time, and every metric it returns is declared."""
    mask = torch.tensor([[True, True, True], [True, True, False]])
    logp = torch.tensor([[-0.1, -2.0, -0.5], [-1.0, -0.3, 0.0]], requires_grad=True)
    entropy = torch.full((2, 3), 0.7, requires_grad=True)
    adv = method.advantages(  # step 1 of 1: only estimators with a schedule read it
        torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask, old_entropy=entropy.detach(), step=1, total_steps=1
    )
    rollout = logp.detach() - torch.tensor([[0.05, -0.3, 0.0], [0.2, 0.0, 0.0]])  # some ratios off 1
    batch = TokenBatch(logp, logp.detach() - 0.1, adv, mask, entropy, entropy.detach(), None, rollout)
    stats = method.step_stats(entropy, mask) if method.needs.step_stats else method.mini_batch_stats(batch)
    loss, metrics = method.loss(batch, stats=stats)
    loss.backward()
    undeclared = sorted(set(metrics) - set(method.metrics))
    if undeclared:
        raise ValueError(f"method {method.name!r} returns undeclared metrics {undeclared}: add them to `metrics`")


def metric_table() -> str:
    """The Markdown table of every metric a loss can return (shared, then each registered part's)."""
    rows = ["| key | reduction | meaning |", "|---|---|---|"]
    groups = [SHARED_METRICS] + [dict(c.metrics) for c in sorted(registered("intervention").values(), key=_name)]
    roles = ("correction", "regulariser", "controller")
    groups += [dict(c.metrics) for role in roles for c in registered(role).values()]
    seen: set[str] = set()
    for metrics in groups:
        rows += [f"| `{k}` | {m.reduce} | {m.meaning} |" for k, m in metrics.items() if k not in seen]
        seen |= set(metrics)
    return "\n".join(rows) + "\n"


def _name(cls: type[Part]) -> str:
    return cls.name


def describe(cls: type[Intervention]) -> str:
    """The first line of an intervention's module docstring (its formula's title)."""
    doc = inspect.getmodule(cls).__doc__ or ""  # type: ignore[union-attr]
    return doc.strip().splitlines()[0] if doc.strip() else cls.__name__

"""STEER (arXiv 2510.10150): token weights λ_t from the estimated entropy change |Ω_t| (``docs/methods.md §M14``).

    Ω_t       = the first-order entropy change of token t (:func:`~steer_bench.algos.entropy.omega`, ``form``)
    exp:      k = −ln λ_min / max(S, floor);  λ = clamp(exp(−k·|Ω|), λ_min, 1)          (the method; release)
    linear:   λ = w_max − (|Ω| − min|Ω|)(w_max − w_min)/(S − min|Ω|), clamped to [w_min, w_max];
              (w_min + w_max)/2 when S ≤ min|Ω|                                          (release variant)
    rank:     λ = 1 − (1 − λ_min)·u,  u = (R − 1)/(n − 1) ∈ [0, 1]  (u = 0 if n = 1)        (our ablation)
              R = the average rank (1 = smallest, ties averaged) of |Ω_t| among the n valid tokens of the
              micro-batch; λ = 1 on padding, which takes no part in the ranks
    L_method  = λ ⊙ L,  λ without gradient, 0 on padding (exp, linear)                    (all (B, T))

S normalises |Ω| over a group of valid tokens: its max (the release's ``compute_token_weights``) or, as **our
ablation not in the paper** (``k_norm="quantile:<q>"``), its q-quantile. The release normalises over each
micro-batch (``scope: micro``); ``scope: mini`` computes (min|Ω|, S) once over the whole mini-batch and
all ranks (min of minima, max of maxima: exact for ``k_norm: max``; for a quantile, the max over ranks).

Two **ablations not in the paper** (docs/methods.md §M22, §M23) answer an independent 1.5B reproduction
(Parkdev22222/entropy_collapse: its omega_forms.json and STEERF_method.md §3, in its docs folder), which found the
released Ω correlating 0.26 with the measured one-step entropy change and the theorem's form 0.39, and 75–83% of
the weights at a bound because one 1/π_old outlier per micro-batch sets the max:

- ``form: theorem`` (§M22): Ω_t = I_t · (A_t · r_t) · p(1 − p)(ln p + H_t) with r = π_θ/π_old, the factor of the
  paper's Theorem 1 (clipped-surrogate gradient r·A, then Assumption 1), and I_t = 0 where the token gets no
  gradient from the clipped surrogate (``Surrogate.clipped``: A > 0, r > 1 + ε_high or A < 0, r < 1 − ε_low,
  the theorem's indicator as that reproduction writes it; and, **our choice**, ``Surrogate.clipped_dual``:
  the dual clip binds), 1 elsewhere. Needs the surrogate, hence ``scope: micro`` only (our choice).
- ``mapping: rank`` (§M23): λ from the rank of |Ω| instead of its min–max, so one outlier moves one token; the
  map is invariant to any strictly increasing transform of |Ω| (a rescaling included). ``weight_max``,
  ``omega_floor`` and ``k_norm`` are unused. ``scope: micro`` only (the ranks over a mini-batch would need every
  rank's |Ω|: not implemented, our choice). Zero-advantage tokens (Ω = 0, tied at the bottom) get their tie
  group's average rank and so λ < 1, which changes nothing: their surrogate loss is 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, Reduce, TokenBatch, check_scope
from steer_bench.algos.entropy import OMEGA_FORMS, QUADRANTS, omega
from steer_bench.algos.registry import Metric, register
from steer_bench.algos.stats import masked_quantile
from steer_bench.algos.surrogates import Surrogate

MAPPINGS = ("exp", "linear", "rank")
SCOPE_MICRO_ONLY = "needs each micro-batch's own tokens (docs/methods.md §M22, §M23): use scope micro"


def parse_k_norm(k_norm: str) -> float | None:
    """``"max"`` -> None; ``"quantile:<q>"`` -> q in (0, 1]. Anything else is an error."""
    if k_norm == "max":
        return None
    if k_norm.startswith("quantile:"):
        try:
            q = float(k_norm.split(":", 1)[1])
        except ValueError:
            q = math.nan
        if 0 < q <= 1:
            return q
    raise ValueError(f"k_norm must be 'max' or 'quantile:<q>' with 0 < q <= 1, got {k_norm!r}")


def omega_range(abs_omega: Tensor, response_mask: Tensor, *, k_norm: str) -> tuple[float, float]:
    """(min |Ω|, S) over the valid tokens, S = max |Ω| or its quantile (see module doc); (0, 0) if none valid."""
    q = parse_k_norm(k_norm)
    valid = abs_omega[response_mask.bool()]
    if valid.numel() == 0:
        return 0.0, 0.0
    scale = valid.max() if q is None else masked_quantile(abs_omega, response_mask, q)
    return float(valid.min()), float(scale)


def lambda_map(
    abs_omega: Tensor,
    response_mask: Tensor,
    *,
    lo: float,
    scale: float,
    weight_min: float,
    weight_max: float,
    mapping: str,
    omega_floor: float,
) -> Tensor:
    """λ (B, T) from |Ω| and its range (lo, scale); 0 on padding (as released). No gradient.

    ``mapping="rank"`` ignores (lo, scale), weight_max and omega_floor and puts λ = 1 on padding (module doc)."""
    if mapping == "rank":
        return 1.0 - (1.0 - weight_min) * rank_fraction(abs_omega, response_mask)
    mask = response_mask.to(abs_omega.dtype)
    if mapping == "exp":
        # weight_max is unused: the release clamps the exponential map at 1.
        k = -math.log(weight_min) / max(scale, omega_floor)
        lam = torch.exp(-k * abs_omega).clamp(weight_min, 1.0)
    else:
        if scale > lo:
            lam = weight_max - (abs_omega - lo) * (weight_max - weight_min) / (scale - lo)
        else:
            lam = torch.full_like(abs_omega, (weight_min + weight_max) / 2)
        lam = lam.clamp(weight_min, weight_max)
    return lam * mask


def rank_fraction(abs_omega: Tensor, response_mask: Tensor) -> Tensor:
    """u (B, T) = (R − 1)/(n − 1): R the average rank (1 = smallest, ties averaged) of |Ω| among the n valid
    tokens; 0 where n ≤ 1 and on padding. Our ablation's rank map (module doc). No gradient."""
    with torch.no_grad():
        mask = response_mask.bool()
        out = torch.zeros_like(abs_omega)
        valid = abs_omega[mask]
        n = valid.numel()
        if n <= 1:
            return out
        _, inverse, counts = torch.unique(valid, sorted=True, return_inverse=True, return_counts=True)
        first = torch.cumsum(counts, 0) - counts  # 0-based rank of each distinct value's first occurrence
        avg_rank0 = first.to(abs_omega.dtype) + (counts.to(abs_omega.dtype) - 1) / 2  # R − 1
        out[mask] = avg_rank0[inverse] / (n - 1)
        return out


def steer_weights(  # noqa: PLR0913 -- the five (B, T) inputs and STEER's six hyperparameters, keyword-only
    advantages: Tensor,
    old_log_probs: Tensor,
    log_probs: Tensor,
    entropy: Tensor,
    response_mask: Tensor,
    *,
    weight_min: float,
    weight_max: float,
    mapping: str,
    omega_floor: float,
    k_norm: str,
    form: str,
) -> Tensor:
    """STEER's λ (B, T) treating the whole input as one normalisation group; 0 on padding, no gradient.

    All inputs (B, T): A, log π_old, log π_θ (current), H of the old policy, mask. Hyperparameters: :class:`Steer`.
    ``form="theorem"`` here lacks the clipping indicator, which needs the surrogate (:meth:`Steer.token_loss`).
    """
    abs_omega = omega(advantages, old_log_probs, log_probs, entropy, form=form).abs()
    lo, scale = omega_range(abs_omega, response_mask, k_norm=k_norm)
    return lambda_map(
        abs_omega,
        response_mask,
        lo=lo,
        scale=scale,
        weight_min=weight_min,
        weight_max=weight_max,
        mapping=mapping,
        omega_floor=omega_floor,
    )


@register
@dataclass(frozen=True, kw_only=True)
class Steer(Intervention):
    """λ ⊙ L with λ from |Ω| (module docstring); λ carries no gradient."""

    name = "steer"
    needs_old_entropy = True
    metrics = {
        "steer/lambda_mean": Metric("mean λ"),
        "steer/lambda_min": Metric("smallest λ", "min"),
        "steer/lambda_max": Metric("largest λ", "max"),
        "steer/frac_lambda_below_099": Metric("fraction with λ < 0.99 (tokens STEER visibly down-weights)"),
        "steer/frac_lambda_at_min": Metric("fraction with λ ≤ λ_min + 1e-6"),
        "steer/frac_lambda_at_max": Metric("fraction with λ ≥ the upper bound − 1e-6 (1; weight_max for linear)"),
        "steer/frac_lambda_at_bound": Metric("fraction at either bound (λ_min or the upper bound), ± 1e-6"),
        "steer/floor_active": Metric("1 if S < omega_floor, i.e. the floor set k (exp map only), else 0"),
        "steer/omega_scale": Metric("S, the |Ω| normaliser (max or quantile) used for this call"),
        "steer/omega_abs_p50": Metric("median |Ω|"),
        "steer/omega_abs_p90": Metric("0.9-quantile of |Ω|"),
        "steer/omega_abs_p99": Metric("0.99-quantile of |Ω|"),
        "steer/omega_abs_max": Metric("largest |Ω|", "max"),
        **{f"steer/frac_{q}": Metric(f"fraction of the valid tokens in quadrant {q}") for q in QUADRANTS.values()},
        **{
            f"steer/omega_sum_{q}": Metric(f"Σ Ω over quadrant {q} / valid tokens (its signed share)")
            for q in QUADRANTS.values()
        },
    }
    weight_min: float  # λ_min (release run/run_exp.sh token_weight_min=0.8)
    weight_max: float  # the linear map's upper end (unused by exp, which clamps at 1)
    mapping: str  # exp | linear | rank (our ablation)
    scope: str  # micro (release) | mini
    omega_floor: float  # the release's floor on S: torch.maximum(metric_max, 0.02)
    k_norm: str  # max (release) | quantile:<q> (our ablation)
    form: str  # Ω's form: see steer_bench.algos.entropy.OMEGA_FORMS; theorem adds the clipping indicator here

    def __post_init__(self) -> None:
        check_scope(self.name, self.scope)
        parse_k_norm(self.k_norm)
        if not 0 < self.weight_min <= 1:
            raise ValueError(f"weight_min (λ_min) must be in (0, 1], got {self.weight_min}")
        if self.mapping not in MAPPINGS:
            raise ValueError(f"STEER mapping must be one of {MAPPINGS}, got {self.mapping!r}")
        if self.mapping == "linear" and self.weight_max < self.weight_min:
            raise ValueError(f"weight_max ({self.weight_max}) must be >= weight_min ({self.weight_min})")
        if self.form not in OMEGA_FORMS:
            raise ValueError(f"STEER form must be one of {OMEGA_FORMS}, got {self.form!r}")
        if self.scope != "micro" and (self.mapping == "rank" or self.form == "theorem"):
            what = "mapping rank" if self.mapping == "rank" else "form theorem"
            raise ValueError(f"STEER {what} {SCOPE_MICRO_ONLY}, got scope {self.scope!r}")

    @classmethod
    def release(cls) -> Steer:
        """The release's STEER (zz-haooo/STEER run/run_exp.sh:61-63 and compute_token_weights, docs/methods.md
        §M14): the settings of ``configs/methods/steer.yaml`` (a test keeps the two equal)."""
        return cls(
            weight_min=0.8, weight_max=1.0, mapping="exp", scope="micro", omega_floor=0.02, k_norm="max", form="paper"
        )

    def weights(
        self, advantages: Tensor, old_log_probs: Tensor, log_probs: Tensor, old_entropy: Tensor, mask: Tensor
    ) -> Tensor:
        """λ (B, T) over the rows given as one normalisation group (:func:`steer_weights` with these settings;
        the caller splits by ``scope``); 0 on padding, no gradient."""
        return steer_weights(
            advantages,
            old_log_probs,
            log_probs,
            old_entropy,
            mask,
            weight_min=self.weight_min,
            weight_max=self.weight_max,
            mapping=self.mapping,
            omega_floor=self.omega_floor,
            k_norm=self.k_norm,
            form=self.form,
        )

    @property
    def uses_mini_batch_stats(self) -> bool:
        return self.scope == "mini"

    def _omega(self, batch: TokenBatch) -> Tensor:
        assert batch.old_entropy is not None
        return omega(batch.advantages, batch.old_log_probs, batch.log_probs, batch.old_entropy, form=self.form)

    def mini_batch_stats(self, batch: TokenBatch, reduce: Reduce) -> tuple[float, float]:
        abs_om = self._omega(batch).abs()
        lo, scale = omega_range(abs_om, batch.mask, k_norm=self.k_norm)
        if not batch.mask.any():  # no valid token on this rank: neutral elements of min and max
            lo, scale = math.inf, -math.inf
        lo_t = reduce(torch.tensor(lo, dtype=torch.float64, device=abs_om.device), "min")
        hi_t = reduce(torch.tensor(scale, dtype=torch.float64, device=abs_om.device), "max")
        lo, scale = float(lo_t), float(hi_t)
        return (lo if math.isfinite(lo) else 0.0), (scale if math.isfinite(scale) else 0.0)

    def token_loss(
        self, surrogate: Surrogate, batch: TokenBatch, stats: tuple[float, float] | None
    ) -> tuple[Tensor, Metrics]:
        om = self._omega(batch)
        if self.form == "theorem":  # Theorem 1's clipping indicator: no gradient from L, no entropy change
            no_grad = surrogate.clipped | surrogate.clipped_dual
            om = torch.where(no_grad, torch.zeros_like(om), om)
        abs_om = om.abs()
        lo, scale = omega_range(abs_om, batch.mask, k_norm=self.k_norm) if stats is None else stats
        lam = lambda_map(
            abs_om,
            batch.mask,
            lo=lo,
            scale=scale,
            weight_min=self.weight_min,
            weight_max=self.weight_max,
            mapping=self.mapping,
            omega_floor=self.omega_floor,
        )
        return surrogate.loss * lam, self._metrics(batch, om, lam, scale)

    def _metrics(self, b: TokenBatch, om: Tensor, lam: Tensor, scale: float) -> Metrics:
        """The masked fractions and quadrant sums are rows of one stacked tensor — the same elementwise products
        and sums over (B, T) as one ``frac`` / ``(Ω·1[q]).sum()`` per key (a test checks equality with that
        per-key form), in a few tensor ops instead of ~60: on the miniature this took half of STEER's extra time."""
        assert b.old_entropy is not None
        mask = b.mask
        maskf = mask.float()  # frac's dtype: float32 whatever λ's
        valid_lam = lam[mask] if mask.any() else torch.ones(1)
        abs_q = masked_quantile(om.abs(), mask, [0.5, 0.9, 0.99, 1.0])
        n = mask.sum().clamp(min=1)
        a = b.advantages.sign()
        s = (b.log_probs.detach() + b.old_entropy).sign()
        pos, neg, high, low = a > 0, a < 0, s > 0, s < 0
        quads = torch.stack([pos & high, pos & low, neg & high, neg & low]) & mask  # QUADRANTS order 1..4
        upper = self.weight_max if self.mapping == "linear" else 1.0
        at_min, at_max = lam <= self.weight_min + 1e-6, lam >= upper - 1e-6
        shares = torch.cat(
            [torch.stack([lam.float(), lam < 0.99, at_min, at_max, at_min | at_max]).float(), quads.float()]
        )
        fracs = (shares * maskf).sum(dim=(1, 2)) / maskf.sum().clamp(min=1)
        sums = (om * quads).sum(dim=(1, 2)) / n
        out = {
            "steer/lambda_mean": fracs[0],
            "steer/lambda_min": valid_lam.min(),
            "steer/lambda_max": valid_lam.max(),
            "steer/frac_lambda_below_099": fracs[1],
            "steer/frac_lambda_at_min": fracs[2],
            "steer/frac_lambda_at_max": fracs[3],
            "steer/frac_lambda_at_bound": fracs[4],
            "steer/floor_active": torch.tensor(float(self.mapping == "exp" and scale < self.omega_floor)),
            "steer/omega_scale": torch.tensor(scale),
            "steer/omega_abs_p50": abs_q[0],
            "steer/omega_abs_p90": abs_q[1],
            "steer/omega_abs_p99": abs_q[2],
            "steer/omega_abs_max": abs_q[3],
        }
        for i, qname in enumerate(QUADRANTS.values()):
            out[f"steer/frac_{qname}"] = fracs[5 + i]
            out[f"steer/omega_sum_{qname}"] = sums[i]
        return out

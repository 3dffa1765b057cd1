"""Regularisers: terms added to the aggregated policy loss, each with a coefficient that a controller
(:mod:`~steer_bench.algos.entropy_control`, :mod:`~steer_bench.algos.entropic`) may set by step::

    loss = agg(L_method) + Σ_j term_j(c_j)        entropy_bonus:  term = −β · agg(H)      (β = ``coef``; none at β = 0)
                                                  entropic_term:  term = α · agg_high(−r·|A|)   (:mod:`.entropic`)

A regulariser declares what it needs from the batch (``needs_entropy``; ``needs_entropy_grad``: the current
policy's entropy with gradient) and the metrics it logs. Its ``coef`` applies when no controller drives it;
a controller whose ``drives`` names it replaces the coefficient by the step's value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import Tensor

from steer_bench.algos.base import Metrics, TokenBatch, Totals
from steer_bench.algos.registry import Metric, Part, register
from steer_bench.algos.surrogates import aggregate


@dataclass(frozen=True, kw_only=True)
class Regulariser(Part):
    """A term added to the loss of every call: :meth:`term` from the call's batch, its coefficient (``coef``
    or a controller's value), the method's aggregation and the mini-batch's totals."""

    role = "regulariser"
    needs_entropy_grad: ClassVar[bool] = False  # the current policy's entropy, with gradient, in every loss call

    coef: float  # the coefficient (a controller that drives this regulariser replaces it by its value)

    def check_agg(self, agg: str) -> None:
        """Raise ValueError if the term is not implemented for the method's loss aggregation."""

    def term(self, batch: TokenBatch, coef: float, *, agg: str, totals: Totals) -> tuple[Tensor | None, Metrics]:
        """(the term added to the loss, or None for none; its metrics) of one call."""
        raise NotImplementedError


def counts(totals: Totals) -> dict[str, int | None]:
    """The totals as :func:`~steer_bench.algos.surrogates.aggregate`'s keyword arguments."""
    return {
        "batch_tokens": totals.batch_tokens,
        "batch_seqs": totals.batch_seqs,
        "max_response_len": totals.max_response_len,
    }


@register
@dataclass(frozen=True, kw_only=True)
class EntropyBonus(Regulariser):
    """The entropy bonus: −β·agg(H), H the current policy's full-vocabulary entropy, aggregated like the policy
    loss (verl's ``entropy_coeff``; TRL's entropy bonus); a zero coefficient adds nothing (no term, no metric)."""

    name = "entropy_bonus"
    needs_entropy = True
    needs_entropy_grad = True
    metrics = {
        "loss/entropy_bonus": Metric(
            "β·agg(H), H the full-vocabulary entropy at τ, subtracted from the loss (only when β ≠ 0)", "sum"
        ),
    }

    def term(self, batch: TokenBatch, coef: float, *, agg: str, totals: Totals) -> tuple[Tensor | None, Metrics]:
        if coef == 0:
            return None, {}
        assert batch.entropy is not None
        bonus = coef * aggregate(batch.entropy, batch.mask, agg=agg, **counts(totals))
        return -bonus, {"loss/entropy_bonus": bonus.detach()}


def entropy_bonus(coef: float) -> tuple[Regulariser, ...]:
    """The regularisers of a fixed bonus β: none at β = 0 (the loss then needs no entropy)."""
    return () if coef == 0 else (EntropyBonus(coef=coef),)

"""What one method file defines: a token-level intervention and the batch it is called on.

A token-level intervention is a part (:mod:`steer_bench.algos.registry`) of kind ``intervention``: a frozen
dataclass subclassing :class:`Intervention`, registered with ``@register`` in one file of
``steer_bench/algos/interventions/`` (listed in its ``__init__``) or, outside the library, named as
``"package.module:ClassName"`` in a preset. Its keyword-only fields without defaults are its hyperparameters
(values come from ``configs/methods/*.yaml``); it declares what it needs from the trainer, its metrics with
their reductions and meanings, and optionally statistics over a whole mini-batch, which it all-reduces over
ranks itself through the ``reduce`` it is handed (so no rank can forget to). The metric table
(``steer-bench methods --metrics``) and the reductions across micro-batches all derive from these classes.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor

from steer_bench.algos.registry import Part
from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogates import Surrogate

Metrics = dict[str, Tensor]
ReduceOp = Literal["sum", "min", "max"]
Reduce = Callable[[Tensor, ReduceOp], Tensor]
"""An all-reduce across the data-parallel ranks: ``reduce(x, op)`` returns x combined over every rank."""


def local_reduce(x: Tensor, op: ReduceOp) -> Tensor:
    """The all-reduce of a single process: the value itself."""
    return x


@dataclass(frozen=True)
class TokenBatch:
    """The (B, T) response-token inputs of one call; only ``log_probs`` and ``entropy`` may carry gradient."""

    log_probs: Tensor  # current policy, with gradient
    old_log_probs: Tensor  # π_old (the rollout policy as the trainer scores it)
    advantages: Tensor
    mask: Tensor  # bool, False on padding
    entropy: Tensor | None = None  # current policy's full-distribution entropy (grad only for the bonus)
    old_entropy: Tensor | None = None  # π_old's entropy
    generator: torch.Generator | None = None  # random choices (clip_cov); None: torch's global RNG
    rollout_log_probs: Tensor | None = None  # the rollout engine's log-probs (rollout importance correction)

    def detached(self) -> TokenBatch:
        """The same batch without gradient anywhere (mini-batch statistics)."""
        return dataclasses.replace(
            self,
            log_probs=self.log_probs.detach(),
            entropy=None if self.entropy is None else self.entropy.detach(),
        )


@dataclass(frozen=True)
class Totals:
    """Mini-batch totals for exact gradient accumulation (the same for every micro-batch call of a mini-batch);
    None = this call's own. ``max_response_len``: Dr. GRPO's constant (the generation budget)."""

    batch_tokens: int | None = None
    batch_seqs: int | None = None
    max_response_len: int | None = None


@dataclass(frozen=True, kw_only=True)
class Intervention(Part):
    """Turns the shared clipped surrogate L (B, T) into a method's per-token loss (see the module docstring).

    Subclasses set ``name`` (the preset's ``loss.name``), ``metrics`` and the ``needs_*`` flags, define
    :meth:`token_loss` and, if they normalise over the whole mini-batch, :attr:`uses_mini_batch_stats` and
    :meth:`mini_batch_stats`; if they need a statistic of π_old's values over the whole step batch (known before
    the update, no extra pass), :attr:`uses_step_stats` and :meth:`step_stats`. ``__post_init__`` is the place
    to reject bad hyperparameter values.
    """

    role = "intervention"  # needs_entropy: the current policy's entropy as a value (no gradient)

    @classmethod
    def check_declaration(cls) -> None:
        undeclared = [k for k in cls.metrics if not k.startswith(f"{cls.name}/")]
        if undeclared:
            raise TypeError(f"intervention {cls.name!r}: metric keys must start with '{cls.name}/': {undeclared}")

    @property
    def uses_mini_batch_stats(self) -> bool:
        """Whether the trainer must call :meth:`mini_batch_stats` (a no-grad pass over the mini-batch)."""
        return False

    def mini_batch_stats(self, batch: TokenBatch, reduce: Reduce) -> Any:
        """Statistics over the whole mini-batch (every rank's rows: combine with ``reduce``), passed to every
        micro-batch's :meth:`token_loss` as ``stats``. ``batch`` carries no gradient."""
        raise NotImplementedError(f"{self.name} has no mini-batch statistics")

    @property
    def uses_step_stats(self) -> bool:
        """Whether the trainer must call :meth:`step_stats` once per step, before the update."""
        return False

    def step_stats(self, old_entropy: Tensor, mask: Tensor, reduce: Reduce) -> Any:
        """Statistics of π_old's entropy (B, T) over the step batch (every rank's rows: combine with ``reduce``),
        passed to every call's :meth:`token_loss` as ``stats``. At most one of step / mini-batch statistics."""
        raise NotImplementedError(f"{self.name} has no step statistics")

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: Any) -> tuple[Tensor, Metrics]:
        """The per-token loss (B, T) and this call's metrics; ``stats`` is None unless step / mini-batch statistics."""
        raise NotImplementedError


def frac(x: Tensor, mask: Tensor) -> Tensor:
    """Fraction of the valid tokens where ``x`` holds (float32, 0 when none is valid)."""
    return masked_mean(x.float(), mask)


SCOPES = ("micro", "mini")  # where a per-token normaliser is computed: each call, or the whole mini-batch


def check_scope(name: str, scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"{name} scope must be one of {SCOPES}, got {scope!r}")

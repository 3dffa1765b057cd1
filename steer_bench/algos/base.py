"""What one method file defines, and how the library finds it.

A token-level intervention is a frozen dataclass subclassing :class:`Intervention` in one file of
``steer_bench/algos/interventions/`` (found there automatically) or in any importable module named as
``"package.module:ClassName"`` in a preset. Its keyword-only fields without defaults are its hyperparameters
(values come from ``configs/methods/*.yaml``); it declares what it needs from the trainer, its metrics with
their reductions and meanings, and optionally statistics over a whole mini-batch, which it all-reduces over
ranks itself through the ``reduce`` it is handed (so no rank can forget to). The registry, the metric table
(``steer-bench methods --metrics``) and the reductions across micro-batches all derive from these classes.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor

from steer_bench.algos.stats import masked_mean
from steer_bench.algos.surrogate import Surrogate

Metrics = dict[str, Tensor]
ReduceOp = Literal["sum", "min", "max"]
Reduce = Callable[[Tensor, ReduceOp], Tensor]
"""An all-reduce across the data-parallel ranks: ``reduce(x, op)`` returns x combined over every rank."""


def local_reduce(x: Tensor, op: ReduceOp) -> Tensor:
    """The all-reduce of a single process: the value itself."""
    return x


@dataclass(frozen=True)
class Metric:
    """A metric key's meaning and how its per-call values combine over the micro-batches of a mini-batch.

    ``mean`` is weighted by each call's valid tokens (exact for fractions and token means, approximate for
    quantiles); ``sum`` / ``min`` / ``max`` as named. Across ranks the trainer then averages (``_max`` /
    ``_min`` keys: max / min)."""

    meaning: str
    reduce: Literal["mean", "sum", "min", "max"] = "mean"


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


INTERVENTIONS: dict[str, type[Intervention]] = {}


@dataclass(frozen=True, kw_only=True)
class Intervention:
    """Turns the shared clipped surrogate L (B, T) into a method's per-token loss (see the module docstring).

    Subclasses set ``name`` (the preset's ``loss.name``), ``metrics`` and the ``needs_*`` flags, define
    :meth:`token_loss` and, if they normalise over the whole mini-batch, :attr:`uses_mini_batch_stats` and
    :meth:`mini_batch_stats`; if they need a statistic of π_old's values over the whole step batch (known before
    the update, no extra pass), :attr:`uses_step_stats` and :meth:`step_stats`. ``__post_init__`` is the place
    to reject bad hyperparameter values.
    """

    name: ClassVar[str]
    needs_entropy: ClassVar[bool] = False  # the current policy's entropy (its value; no gradient)
    needs_old_entropy: ClassVar[bool] = False  # π_old's entropy
    metrics: ClassVar[Mapping[str, Metric]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            other = INTERVENTIONS.get(cls.name)
            if other is not None and other.__qualname__ != cls.__qualname__:
                raise TypeError(f"two interventions named {cls.name!r}: {other.__module__} and {cls.__module__}")
            INTERVENTIONS[cls.name] = cls
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


def hyperparameters(cls: type[Intervention]) -> tuple[str, ...]:
    """An intervention's hyperparameters: its dataclass fields, in order."""
    return tuple(f.name for f in dataclasses.fields(cls))


def discover() -> None:
    """Import every module of ``steer_bench/algos/interventions/`` so that its classes register."""
    from steer_bench.algos import interventions

    for info in pkgutil.iter_modules(interventions.__path__):
        importlib.import_module(f"{interventions.__name__}.{info.name}")


def intervention_class(name: str) -> type[Intervention]:
    """The class registered as ``name``, or imported from ``"package.module:ClassName"``."""
    if ":" in name:
        module, _, attr = name.partition(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as e:
            raise ValueError(f"policy loss {name!r} cannot be imported: {e}") from e
        if not (isinstance(cls, type) and issubclass(cls, Intervention)):
            raise ValueError(f"policy loss {name!r} is not an Intervention subclass")
        return cls
    discover()
    if name not in INTERVENTIONS:
        raise ValueError(f"unknown policy loss {name!r}; valid: {', '.join(sorted(INTERVENTIONS))}")
    return INTERVENTIONS[name]


def frac(x: Tensor, mask: Tensor) -> Tensor:
    """Fraction of the valid tokens where ``x`` holds (float32, 0 when none is valid)."""
    return masked_mean(x.float(), mask)


SCOPES = ("micro", "mini")  # where a per-token normaliser is computed: each call, or the whole mini-batch


def check_scope(name: str, scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"{name} scope must be one of {SCOPES}, got {scope!r}")

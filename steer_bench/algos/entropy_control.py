"""The adaptive entropy coefficient (Skywork-OR1, arXiv 2505.22312, "adaptive entropy control"; TRL
``use_adaptive_entropy``), a controller whose state crosses steps (``docs/methods.md`` §M27).

    applied_k = c_k · 1[H_k ≤ target]             the entropy bonus's coefficient in step k (term −applied_k·agg(H))
    c_{k+1}   = clamp(c_k + δ, c_min, c_max)  if H_k ≤ target
                clamp(c_k − δ, c_min, c_max)  otherwise       c_0 = ``coef_init``

H_k is the mean token entropy of step k's rollout under π_old over every valid token of every rank (Skywork's
e_k, the current policy's entropy on the batch, known before the update). TRL's trainer instead measures the
entropy during the loss passes and applies the new coefficient from the next step on (one step of lag).
The module also holds :class:`EntropySchedule`, β as a function of the step (constant, linear, cosine).
The trainer keeps c in its checkpointed state (``TrainState.entropy_coef``), so a resumed run continues it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from steer_bench.algos.registry import Metric, Part, register

METRICS: dict[str, Metric] = {
    "loss/entropy_coef": Metric(
        "the entropy-bonus coefficient applied in the call (adaptive entropy and entropy_schedule only)"
    ),
}


@dataclass(frozen=True, kw_only=True)
class Controller(Part):
    """A controller of one regulariser's coefficient by step (at most one per method; the preset's
    ``loss.<name>``): :meth:`step` once per training step gives the step's value and the state to keep (the
    trainer checkpoints it); every loss call then uses that value as the coefficient of the regulariser named
    ``drives`` (:mod:`~steer_bench.algos.regularisers`) and logs it under ``value_key``."""

    role = "controller"
    drives: ClassVar[str]  # the name of the regulariser whose coefficient the value is
    value_key: ClassVar[str]  # the metric of the value applied in a call (one of ``metrics``)
    reads_entropy: ClassVar[bool] = True  # :meth:`step` reads the step's mean π_old entropy over every rank

    @classmethod
    def check_declaration(cls) -> None:
        if not isinstance(getattr(cls, "drives", None), str):
            raise TypeError(f"controller {cls.name!r} must name the regulariser it drives (ClassVar drives)")
        if getattr(cls, "value_key", None) not in cls.metrics:
            raise TypeError(f"controller {cls.name!r}: its value_key must be one of its metrics")

    @property
    def initial(self) -> float:
        """The value before any step (a loss call without one: the load-time dry run, a direct call)."""
        raise NotImplementedError

    def step(
        self, state: float | None, entropy: float | None, *, step: int = 0, total_steps: int = 1
    ) -> tuple[float, float | None]:
        """(the step's value, the state to keep) from the kept state (None at the start), the step's mean π_old
        entropy (None unless ``reads_entropy``), the steps done before this one and the run's steps."""
        raise NotImplementedError


@register
@dataclass(frozen=True, kw_only=True)
class AdaptiveEntropy(Controller):
    """The preset's ``loss.adaptive_entropy`` (module docstring); the state c lives with the caller."""

    name = "adaptive_entropy"
    drives = "entropy_bonus"
    value_key = "loss/entropy_coef"
    metrics = METRICS

    coef_init: float  # c_0
    delta: float  # δ, the step of c per training step
    target: float  # the target entropy (nats)
    coef_min: float
    coef_max: float

    def __post_init__(self) -> None:
        if not 0 <= self.coef_min <= self.coef_init <= self.coef_max:
            raise ValueError(
                f"adaptive_entropy needs 0 <= coef_min <= coef_init <= coef_max, got "
                f"{self.coef_min}, {self.coef_init}, {self.coef_max}"
            )
        if not self.delta > 0:
            raise ValueError(f"adaptive_entropy delta must be > 0, got {self.delta}")

    def step(
        self, state: float | None, entropy: float | None, *, step: int = 0, total_steps: int = 1
    ) -> tuple[float, float]:
        """(applied_k, c_{k+1}) from c_k (None: c_0) and H_k."""
        assert entropy is not None
        c = self.coef_init if state is None else state
        below = entropy <= self.target
        nxt = min(max(c + self.delta if below else c - self.delta, self.coef_min), self.coef_max)
        return (c if below else 0.0), nxt

    @property
    def initial(self) -> float:
        return self.coef_init


SCHEDULE_KINDS = ("constant", "linear", "cosine")


@register
@dataclass(frozen=True, kw_only=True)
class EntropySchedule(Controller):
    """The preset's ``loss.entropy_schedule``: the entropy-bonus coefficient β as a function of the step
    (TRL users asked for it, trl#5584; verl and TRL keep β constant)::

        p_k  = min(k / N, 1)          k = the steps done before this one (0, 1, ...), N = the run's steps
        β_k  = β_0                                            constant
               β_0 + (β_1 − β_0) · p_k                        linear
               β_1 + (β_0 − β_1) · (1 + cos(π · p_k)) / 2     cosine

    Our choice: progress k / N as transformers' ``get_linear_schedule_with_warmup`` /
    ``get_cosine_schedule_with_warmup`` (without warm-up): the first step applies β_0, and β_1 is reached at
    k = N (the last step applies the value at (N − 1)/N). β_k is a function of the step number alone, so a
    resumed run applies exactly the uninterrupted run's coefficient (no state to keep).
    Without ``entropy_schedule`` the preset's constant ``entropy_coef`` applies, as before.
    """

    name = "entropy_schedule"
    drives = "entropy_bonus"
    value_key = "loss/entropy_coef"
    reads_entropy = False
    metrics = METRICS
    kind: str  # constant | linear | cosine
    coef_init: float  # β_0, the coefficient of the first step
    coef_final: float  # β_1, the coefficient at the end of training (constant: must equal β_0)

    def __post_init__(self) -> None:
        if self.kind not in SCHEDULE_KINDS:
            raise ValueError(f"entropy_schedule kind must be one of {', '.join(SCHEDULE_KINDS)}, got {self.kind!r}")
        if self.kind == "constant" and self.coef_final != self.coef_init:
            raise ValueError(
                f"entropy_schedule kind 'constant' needs coef_final == coef_init, "
                f"got {self.coef_init}, {self.coef_final}"
            )

    def step(
        self, state: float | None, entropy: float | None, *, step: int = 0, total_steps: int = 1
    ) -> tuple[float, float | None]:
        """(β_k, the state untouched): a function of the step alone."""
        return self.at(step, total_steps), state

    @property
    def initial(self) -> float:
        return self.coef_init

    def at(self, step: int, total_steps: int) -> float:
        """β_k for k = ``step`` steps done out of N = ``total_steps``."""
        if step < 0 or total_steps < 1:
            raise ValueError(f"entropy_schedule needs step >= 0 and total_steps >= 1, got {step}, {total_steps}")
        p = min(step / total_steps, 1.0)
        b0, b1 = self.coef_init, self.coef_final
        if self.kind == "constant":
            return b0
        if self.kind == "linear":
            return b0 + (b1 - b0) * p
        return b1 + (b0 - b1) * (1.0 + math.cos(math.pi * p)) / 2.0

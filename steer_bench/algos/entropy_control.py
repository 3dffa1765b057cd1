"""The adaptive entropy coefficient (Skywork-OR1, arXiv 2505.22312, "adaptive entropy control"; TRL
``use_adaptive_entropy``), a controller whose state crosses steps (``docs/methods_2026.md`` §N3).

    applied_k = c_k · 1[H_k ≤ target]             the bonus coefficient of step k (loss −= applied_k·agg(H))
    c_{k+1}   = clamp(c_k + δ, c_min, c_max)  if H_k ≤ target
                clamp(c_k − δ, c_min, c_max)  otherwise       c_0 = ``coef_init``

H_k is the mean token entropy of step k's rollout under π_old over every valid token of every rank (Skywork's
e_k, the current policy's entropy on the batch, known before the update). TRL's trainer instead measures the
entropy during the loss passes and applies the new coefficient from the next step on (one step of lag).
The trainer keeps c in its checkpointed state (``TrainState.entropy_coef``), so a resumed run continues it.
"""

from __future__ import annotations

from dataclasses import dataclass

from steer_bench.algos.base import Metric

METRICS: dict[str, Metric] = {
    "loss/entropy_coef": Metric("the entropy-bonus coefficient applied in the call (adaptive entropy only)"),
}


@dataclass(frozen=True, kw_only=True)
class AdaptiveEntropy:
    """The preset's ``loss.adaptive_entropy`` (module docstring); the state c lives with the caller."""

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

    def step(self, coef: float | None, entropy: float) -> tuple[float, float]:
        """(applied_k, c_{k+1}) from c_k (None: c_0) and H_k."""
        c = self.coef_init if coef is None else coef
        below = entropy <= self.target
        nxt = min(max(c + self.delta if below else c - self.delta, self.coef_min), self.coef_max)
        return (c if below else 0.0), nxt

"""Plain dual-clip surrogate: L_method = L (GRPO, Clip-Higher, Dr. GRPO, the extreme setting, …).

Source: verl ``compute_policy_loss_vanilla`` (``docs/methods.md §M1``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import Tensor

from steer_bench.algos.base import Intervention, Metrics, TokenBatch
from steer_bench.algos.registry import register
from steer_bench.algos.surrogates import Surrogate


@register
@dataclass(frozen=True, kw_only=True)
class PPO(Intervention):
    """No intervention: the surrogate itself. No hyperparameters, no metrics of its own."""

    name = "ppo"

    def token_loss(self, surrogate: Surrogate, batch: TokenBatch, stats: Any) -> tuple[Tensor, Metrics]:
        return surrogate.loss, {}

"""A test-only method, defined in this one file (plus a preset naming ``tests.methods.mean_surprisal:MeanSurprisal``):

    m = mean −log π_old over the valid tokens of the whole mini-batch, all ranks     (mini-batch statistic)
    w_t = 1 / (1 + α·(−log π_old,t) / (m + 1e-8))                                   (no gradient)
    L_method = w ⊙ L                                                           (all (B, T))

It exists to prove that a method needing mini-batch statistics is one file: the trainer calls it like any
other and its statistic is the same on every rank. Its metrics sum the statistic over a step's calls under
``_max`` / ``_min`` keys, which the trainer then reduces across ranks by max and min: equal when every rank
used the same values (and, with its own rows, the ranks' local sums differ).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from steer_bench.algos import Intervention, Metric, Reduce, TokenBatch
from steer_bench.algos.base import Metrics
from steer_bench.algos.surrogates import Surrogate


@dataclass(frozen=True, kw_only=True)
class MeanSurprisal(Intervention):
    name = "mean_surprisal"
    metrics = {
        "mean_surprisal/stat_sum_max": Metric("Σ over the calls of the statistic m used (max over ranks)", "sum"),
        "mean_surprisal/stat_sum_min": Metric("Σ over the calls of the statistic m used (min over ranks)", "sum"),
        "mean_surprisal/local_sum_max": Metric("Σ over the calls of this rank's own mean surprisal (max)", "sum"),
        "mean_surprisal/local_sum_min": Metric("Σ over the calls of this rank's own mean surprisal (min)", "sum"),
    }
    alpha: float  # strength of the down-weighting of surprising tokens

    @property
    def uses_mini_batch_stats(self) -> bool:
        return True

    def mini_batch_stats(self, batch: TokenBatch, reduce: Reduce) -> tuple[float, float]:
        mask = batch.mask.bool()
        total = torch.stack([-batch.old_log_probs[mask].sum(), mask.sum()]).to(torch.float64)
        glob = reduce(total, "sum")
        return float(glob[0] / glob[1].clamp(min=1)), float(total[0] / total[1].clamp(min=1))

    def token_loss(
        self, surrogate: Surrogate, batch: TokenBatch, stats: tuple[float, float]
    ) -> tuple[Tensor, Metrics]:
        m, local = stats
        w = 1.0 / (1.0 + self.alpha * -batch.old_log_probs / (m + 1e-8))
        out = {f"mean_surprisal/stat_sum_{r}": torch.tensor(m) for r in ("max", "min")}
        out |= {f"mean_surprisal/local_sum_{r}": torch.tensor(local) for r in ("max", "min")}
        return surrogate.loss * w, out

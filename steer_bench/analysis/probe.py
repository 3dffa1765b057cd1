"""The trainer's entropy probe: every token's measured entropy change across one optimizer step, beside Ω.

At an analysis step the trainer calls :meth:`EntropyProbe.before` right before the optimizer step of the step's
first mini-batch (gradients already accumulated) and :meth:`EntropyProbe.after` right after it. Both recompute
(logp, entropy) of the same rows with the trainer's own ``forward``, at the rollout temperature, in eval mode and
without gradient, micro-batch by micro-batch exactly alike — so the inputs are identical and a step that changes
nothing measures ΔH = 0 exactly. Per token of those rows with A ≠ 0 (the tokens the estimators speak about):

    delta_h            H_after − H_before (measured)
    omega              Ω = (A/π_old)·p(1−p)(ln p + H_old)        ``algos.omega(form="paper")``, as STEER applies it
    omega_first_order  p·Ω                                       ``algos.omega(form="first_order")``
    cov                (A − Ā)(log p − mean log p), means over the mini-batch's valid tokens (``algos.covariance``)
    quadrant           sign A × sign(ln p + H_old)               ``algos.quadrant``; the sign of −Ω
    lam                STEER's λ over the trainer's normalisation groups (the method's parameters for a STEER
                       method, else the release defaults: ``lambda_source``)

with p = π (the policy before the step) and π_old the rollout policy (equal on the first mini-batch, which is
on-policy: the probe's mini-batch). The estimates predict ΔH as −(η/L)·estimate, η = ``cfg.optim.lr`` (the
configured peak rate; AdamW's step is not −η∇, hence the fitted scale in the tables) and L the mini-batch's
valid tokens (the token-mean denominator). ``cfg.analysis.max_tokens`` bounds the rows of the parquet: a uniform
sample (seeded by the step) of those tokens; the step's metrics use all of them.

Multi-process: every rank probes its own rows (the forwards stay symmetric, as FSDP needs); each rank computes
its metrics (the trainer averages them over ranks) and only the main process writes its rows' parquet. L is then
the rank's own token count, while the loss divides by all ranks' tokens: the −η/L column is off by about the
number of processes (the fitted scale and the correlations are unaffected).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from steer_bench import files
from steer_bench.algos import QUADRANTS, Method, covariance, omega, quadrant
from steer_bench.algos.interventions.steer import Steer
from steer_bench.analysis.stats import step_metrics
from steer_bench.config.run import TrainConfig
from steer_bench.rollout.batch import PaddedRollout

Forward = Callable[..., tuple[Tensor, Tensor]]
"""``forward(model, batch, rows, temperature, *, packed) -> (logp, entropy)`` (``steer_bench.train.update``)."""


class EntropyProbe:
    """Measure ΔH per token across the first optimizer step of one RL step (module docstring).

    ``batch`` is the step's ``PaddedRollout``, ``old = (old_logp, old_entropy)`` (B, T) from the rollout-policy pass,
    ``adv`` (B, T), ``forward(model, batch, rows, temperature, packed=…) -> (logp, entropy)`` each (len(rows), T).
    """

    def __init__(
        self,
        step: int,
        method: Method,
        cfg: TrainConfig,
        batch: PaddedRollout,
        old: tuple[Tensor, Tensor],
        adv: Tensor,
        *,
        forward: Forward,
    ) -> None:
        self.step, self.method, self.cfg, self.batch, self.adv = step, method, cfg, batch, adv
        self.old_logp, self.old_entropy = old
        self.forward = forward
        self.rows: Tensor | None = None
        self.seconds = 0.0  # time spent in the probe (forwards, statistics, writing)
        self._before: tuple[Tensor, Tensor] | None = None
        self._after: tuple[Tensor, Tensor] | None = None
        self._tokens: pd.DataFrame | None = None
        self._spillover: dict[str, float] = {}

    # ---- the trainer's calls -------------------------------------------------------------------------
    def before(self, model: Any, rows: Tensor) -> None:
        if self._before is not None:
            raise RuntimeError("EntropyProbe.before called twice")
        self.rows = rows.detach().cpu().clone()
        self._before = self.measure(model, rows)

    def after(self, model: Any, rows: Tensor) -> None:
        if self._before is None or self.rows is None:
            raise RuntimeError("EntropyProbe.after called before EntropyProbe.before")
        if not torch.equal(rows.detach().cpu(), self.rows):
            raise RuntimeError("EntropyProbe.after got other rows than before: ΔH would compare different tokens")
        self._after = self.measure(model, rows)

    def measure(self, model: Any, rows: Tensor) -> tuple[Tensor, Tensor]:
        """(logp, entropy) (len(rows), T) in eval mode (no dropout), no grad, the trainer's micro-batches."""
        t0 = time.perf_counter()
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [
                    self.forward(model, self.batch, r, self.cfg.rollout.temperature, packed=self.cfg.remove_padding)
                    for r in rows.split(self.cfg.micro_batch_size)
                ]
        finally:
            model.train(was_training)
        self.seconds += time.perf_counter() - t0
        return torch.cat([p[0] for p in parts]).float(), torch.cat([p[1] for p in parts]).float()

    def metrics(self) -> dict[str, float]:
        """The step's MLflow-safe metrics ``analysis/...`` over every probed token with A ≠ 0."""
        t0 = time.perf_counter()
        tokens = self.tokens()
        out = step_metrics(tokens) | self._spillover
        self.seconds += time.perf_counter() - t0
        return out | {"analysis/seconds": self.seconds}

    def save(self, path: str | Path) -> dict[str, float]:
        """Write the (sampled) token table to ``path`` (parquet, atomically); return :meth:`metrics`."""
        tokens = self.tokens()
        t0 = time.perf_counter()
        n = self.cfg.analysis.max_tokens
        sample = tokens.sample(n=n, random_state=self.step).sort_index() if len(tokens) > n else tokens
        with files.atomic_path(path) as tmp:
            sample.to_parquet(tmp, index=False)
        self.seconds += time.perf_counter() - t0
        return self.metrics()

    # ---- the token table -----------------------------------------------------------------------------
    def tokens(self) -> pd.DataFrame:
        """One row per probed token with A ≠ 0 (columns: module docstring); computed once."""
        if self._tokens is None:
            if self._before is None or self._after is None or self.rows is None:
                raise RuntimeError("EntropyProbe: before() and after() must run before the results are read")
            self._tokens, self._spillover = self._token_table(self.rows, self._before, self._after)
        return self._tokens

    def _token_table(
        self, rows: Tensor, before: tuple[Tensor, Tensor], after: tuple[Tensor, Tensor]
    ) -> tuple[pd.DataFrame, dict[str, float]]:
        """(the token table, the spillover metrics: ΔH of the tokens with A = 0, which move with shared weights)."""
        dev = before[0].device
        r = rows.to(self.adv.device)
        adv, old_logp, old_ent = (x[r].float().to(dev) for x in (self.adv, self.old_logp, self.old_entropy))
        mask = self.batch.response_mask[r].to(dev)
        (logp, ent), (logp_after, ent_after) = before, after
        lam, lambda_source = self._lambdas(adv, old_logp, logp, old_ent, mask)
        columns = {
            "adv": adv,
            "old_logp": old_logp,
            "logp": logp,
            "logp_after": logp_after,
            "old_entropy": old_ent,
            "entropy": ent,
            "entropy_after": ent_after,
            "delta_h": ent_after - ent,
            "omega": omega(adv, old_logp, logp, old_ent, form="paper"),
            "omega_first_order": omega(adv, old_logp, logp, old_ent, form="first_order"),
            "cov": covariance(adv, logp, mask),
            "lam": lam,
        }
        keep = mask.bool() & (adv != 0)
        zero = mask.bool() & (adv == 0)
        spillover = {
            "analysis/tokens_adv0": float(zero.sum()),
            "analysis/dh_abs_mean_adv0": float(columns["delta_h"][zero].abs().mean()) if zero.any() else math.nan,
        }
        b, t = keep.nonzero(as_tuple=True)
        names = np.array(["none", *(QUADRANTS[q] for q in sorted(QUADRANTS))])  # label 0..4 -> name
        labels = names[quadrant(adv, logp, old_ent, mask)[keep].cpu().numpy()]
        frame = pd.DataFrame(
            {
                "method": self.method.name,
                "seed": self.cfg.seed,
                "step": self.step,
                "row": rows[b.cpu()].numpy(),
                "pos": t.cpu().numpy(),
                **{k: v[keep].cpu().numpy() for k, v in columns.items()},
                "quadrant": labels,
                "lr": self.cfg.optim.lr,
                "n_tokens": int(mask.sum()),
                "lambda_source": lambda_source,
            }
        )
        return frame, spillover

    def _lambdas(
        self, adv: Tensor, old_logp: Tensor, logp: Tensor, old_ent: Tensor, mask: Tensor
    ) -> tuple[Tensor, str]:
        """STEER's λ (len(rows), T) over the trainer's groups: per micro-batch (scope micro) or the mini-batch."""
        iv, source = self.method.intervention, "method"
        if not isinstance(iv, Steer):  # the release's λ, for methods that do not weight by it
            iv, source = Steer.release(), "release defaults"
        index = torch.arange(len(adv), device=adv.device)
        groups = [index] if iv.scope == "mini" else list(index.split(self.cfg.micro_batch_size))
        lam = torch.zeros_like(logp)
        for g in groups:
            lam[g] = iv.weights(adv[g], old_logp[g], logp[g], old_ent[g], mask[g])
        return lam, source

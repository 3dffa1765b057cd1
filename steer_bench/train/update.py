"""The update phase: forward passes over rollout rows, π_old's log-probs, and the mini-batch optimizer steps
with micro-batch gradient accumulation — the only place the trainer calls the method's loss."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from steer_bench.algos import Method, TokenBatch, Totals
from steer_bench.analysis import EntropyProbe
from steer_bench.config.run import TrainConfig
from steer_bench.errors import NonFiniteError, SteerBenchError
from steer_bench.rollout.batch import PaddedRollout, RolloutBatch, score_responses
from steer_bench.rollout.model import pad_to, select_rows
from steer_bench.rollout.packing import pack_rows, padding_share, score_packed
from steer_bench.sharding import reshard
from steer_bench.train.batching import loss_factor, loss_totals
from steer_bench.train.distributed import global_totals, rank_reduce
from steer_bench.train.guards import check_token_values, check_weights


def forward(
    model: Any, batch: PaddedRollout, rows: torch.Tensor, temperature: float, *, packed: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logp, entropy), each (len(rows), T) of the full batch's T, for the sub-batch ``rows``: one forward of its
    real tokens packed into one row (``packed``, ``train.remove_padding``) or of its padded layout (the reference)."""
    if packed:
        return score_packed(model, pack_rows(batch, rows), temperature=temperature)
    sub = select_rows(batch, rows)
    logp, entropy = score_responses(model, sub, temperature=temperature)
    t = batch.response_mask.shape[1]
    return pad_to(logp, t), pad_to(entropy, t)


def micro_batches(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def forward_rows(
    model: Any, batch: PaddedRollout, rows: torch.Tensor, cfg: TrainConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`forward` over ``rows`` in the trainer's micro-batches, concatenated."""
    temperature, packed = cfg.rollout.temperature, cfg.remove_padding
    parts = [forward(model, batch, r, temperature, packed=packed) for r in micro_batches(rows, cfg.micro_batch_size)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


@torch.no_grad()
def rollout_logprobs(model: Any, batch: PaddedRollout, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropy of the rollout policy in one no-grad pass, reused by every mini-batch update
    (as π_old), by STEER's Ω and entropy-aware advantages (as H), and by the entropy metrics."""
    model.eval()
    logp, entropy = forward_rows(model, batch, torch.arange(len(batch.input_ids)), cfg)
    check_token_values(
        {"the old log-prob": logp, "the old entropy": entropy}, batch.response_mask, where="(π_old pass)"
    )
    return logp, entropy


def engine_logprobs(rollout: RolloutBatch, batch: PaddedRollout) -> tuple[torch.Tensor, torch.Tensor]:
    """π_old's (log-probs, entropy) (B, T) as the engine computed them while sampling (``old_logprobs:
    rollout``), checked like the recomputed ones."""
    if batch.response_logprobs is None or rollout.response_entropy is None:
        raise SteerBenchError("old_logprobs: rollout needs an engine that returns log-probs and entropies (hf)")
    logp = batch.response_logprobs
    entropy = rollout.token_values(rollout.response_entropy, logp.device)
    check_token_values({"the old log-prob": logp, "the old entropy": entropy}, batch.response_mask, where="(rollout)")
    return logp, entropy


@dataclass(frozen=True)
class Learner:
    """The policy under training and what moves it: its optimizer, learning-rate schedule and launch."""

    model: Any  # a transformers model, as prepared for the launch (plain, DDP or FSDP2)
    optimizer: torch.optim.Optimizer
    scheduler: Any  # transformers' LambdaLR schedule (or any object with step() and get_last_lr())
    accelerator: Accelerator


LossFn = Callable[[TokenBatch, Totals], tuple[torch.Tensor, dict[str, Any]]]
"""One micro-batch's (loss, metrics): the method's loss with the mini-batch's statistics bound."""


def policy_update(
    learner: Learner,
    rows: UpdateRows,
    method: Method,
    cfg: TrainConfig,
    *,
    probe: EntropyProbe | None = None,
    entropy_coef: float | None = None,
) -> dict[str, float]:
    """``updates_per_rollout`` optimizer steps on one rollout batch; returns the reduced loss metrics.

    ``probe`` (entropy-dynamics analysis) is told the rows of the first mini-batch right before and right
    after its optimizer step, to measure every token's entropy change across exactly one update.
    ``entropy_coef``: this step's controller value (:meth:`Method.entropy_coef_step`; None: the preset's β).
    """
    model, optimizer, scheduler, accelerator = learner.model, learner.optimizer, learner.scheduler, learner.accelerator
    batch, mask = rows.batch, rows.batch.response_mask
    mini = cfg.mini_batch_prompts * cfg.rollout.n // accelerator.num_processes
    calls: list[dict[str, Any]] = []
    grad_norms: list[float] = []
    model.train()
    step_stats = None  # STARE's gate: π_old's entropy over the step batch, all ranks, before the update
    if method.needs.step_stats:
        step_stats = method.step_stats(rows.old_entropy, mask, rank_reduce(accelerator))
    with MemoryAudit(model, sharded=cfg.shard == "fsdp2") as audit:
        for epoch in range(cfg.ppo_epochs):
            for start in range(0, len(mask), mini):
                index = torch.arange(start, min(start + mini, len(mask)))
                stats = step_stats
                if method.needs.mini_batch_stats:  # STEER scope=mini / fork tokens: one no-grad pass, all ranks
                    with torch.no_grad():
                        logp, entropy = forward_rows(model, batch, index, cfg)
                    stats = method.mini_batch_stats(rows.tokens(index, logp, entropy), rank_reduce(accelerator))
                optimizer.zero_grad(set_to_none=True)
                loss = functools.partial(method.loss, stats=stats, entropy_coef=entropy_coef)
                calls += accumulate_gradients(model, accelerator, rows, index, cfg, loss=loss, audit=audit)
                grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
                if not np.isfinite(grad_norm):
                    raise NonFiniteError(f"the gradient norm is {grad_norm}")
                grad_norms.append(grad_norm)
                first = epoch == 0 and start == 0
                if probe is not None and first:
                    probe.before(model, index)
                reshard(model)  # a no-grad pass (the probe) leaves the root gathered: stale once the shards step
                optimizer.step()
                check_weights(
                    model, accelerator, where=f"after the optimizer step on rows {start}..{index[-1].item()}"
                )
                scheduler.step()
                if probe is not None and first:
                    probe.after(model, index)
    optimizer.zero_grad(set_to_none=True)  # the gradients are dead until the next update: not held during rollout
    minis = micro_batches(torch.arange(len(mask)), mini)  # the update's mini-batches, as the loop above cuts them
    real, positions = padding_share(batch, [m for index in minis for m in micro_batches(index, cfg.micro_batch_size)])
    return (
        method.reduce_metrics(calls)
        | audit.metrics()
        | {
            "train/padding_share": 1 - real / positions,  # of the padded layout's positions: what remove_padding saves
            "train/grad_norm": float(np.mean(grad_norms)),
            "train/grad_norm_max": float(np.max(grad_norms)),
            "train/lr": float(scheduler.get_last_lr()[0]),
        }
    )


def accumulate_gradients(
    model: Any,
    accelerator: Accelerator,
    rows: UpdateRows,
    index: torch.Tensor,
    cfg: TrainConfig,
    *,
    loss: LossFn,
    audit: MemoryAudit,
) -> list[dict[str, Any]]:
    """Forward and backward over the mini-batch ``index`` in micro-batches; returns each call's loss metrics.
    ``loss``: the method's loss of one micro-batch given the mini-batch's totals."""
    mask = rows.batch.response_mask
    counts = global_totals(mask[index], accelerator) | {"max_response_len": cfg.rollout.max_new_tokens}
    totals = Totals(**loss_totals(cfg.loss_scale, counts))  # release: each micro-batch's own counts
    micro = micro_batches(index, cfg.micro_batch_size)
    calls = []
    for j, mrows in enumerate(micro):
        # DDP: all-reduce once, after the last micro-batch. FSDP2: reduce-scatter every micro-batch into the sharded
        # gradient (a sum of reduce-scatters is the reduce-scatter of the sum), as verl and the release do: skipping
        # it would keep a whole unsharded gradient alive across micro-batches.
        accumulate = cfg.shard == "ddp" and j < len(micro) - 1
        with accelerator.no_sync(model) if accumulate else contextlib.nullcontext():
            logp, entropy = forward(model, rows.batch, mrows, cfg.rollout.temperature, packed=cfg.remove_padding)
            value, metrics = loss(rows.tokens(mrows, logp, entropy), totals)
            if not torch.isfinite(value):
                raise NonFiniteError(f"the loss is {value.item()} (rows {mrows[0].item()}..{mrows[-1].item()})")
            # global_tokens: global denominators, ×W undoes DDP's mean; release: ÷ accumulation steps.
            accelerator.backward(value * loss_factor(cfg.loss_scale, len(micro), accelerator.num_processes))
        audit.after_backward()
        calls.append(metrics)
    return calls


class MemoryAudit:
    """What the update held, checked on every micro-batch through public APIs (the paper path's two memory traps):

    - ``train/logits_bits_max``: the bits of the logits' dtype the loss received (16 under ``mixed_precision:
      bf16``: no float32 (B, T, V) tensor; an autocast wrapper would have converted them to 32);
    - ``train/unsharded_grad_mb_max`` (``shard: fsdp2``): the most gradient memory held unsharded after a
      micro-batch's backward — a parameter whose gradient is not yet in its sharded ``.grad`` keeps it whole, as
      FSDP2 does when gradient sync is off (0 when every micro-batch is reduce-scattered)."""

    def __init__(self, model: Any, *, sharded: bool) -> None:
        self.model, self.sharded = model, sharded
        self.logits_bits, self.unsharded_bytes = 0, 0
        self._hook = model.register_forward_hook(self._saw_output)

    def _saw_output(self, module: Any, inputs: Any, output: Any) -> None:
        self.logits_bits = max(self.logits_bits, output.logits.dtype.itemsize * 8)

    def after_backward(self) -> None:
        if not self.sharded:
            return
        reshard(self.model)  # the sharded parameters (FSDP2 reshards after backward already; a no-op then)
        params = [p for p in self.model.parameters() if p.requires_grad]
        held = sum(p.numel() * p.element_size() for p in params if p.grad is None)
        self.unsharded_bytes = max(self.unsharded_bytes, held)

    def __enter__(self) -> MemoryAudit:
        return self

    def __exit__(self, *exc: object) -> None:
        self._hook.remove()

    def metrics(self) -> dict[str, float]:
        out = {"train/logits_bits_max": float(self.logits_bits)}
        return out | ({"train/unsharded_grad_mb_max": self.unsharded_bytes / 2**20} if self.sharded else {})


class UpdateRows:
    """The rows this rank updates on, with π_old's values and the advantages (all (B, T))."""

    def __init__(self, batch: PaddedRollout, old: tuple[torch.Tensor, torch.Tensor], adv: torch.Tensor) -> None:
        self.batch, (self.old_logp, self.old_entropy), self.adv = batch, old, adv

    def tokens(self, index: torch.Tensor, logp: torch.Tensor, entropy: torch.Tensor) -> TokenBatch:
        """The loss inputs of the rows ``index``, with the current policy's ``logp`` / ``entropy`` for them."""
        mask, lp = self.batch.response_mask[index], self.batch.response_logprobs
        rollout = None if lp is None else lp[index]  # the engine's log-probs (rollout importance correction)
        old = self.old_logp[index]
        return TokenBatch(logp, old, self.adv[index], mask, entropy, self.old_entropy[index], None, rollout)

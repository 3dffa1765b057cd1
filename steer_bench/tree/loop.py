"""One training run of one method on the tree: rollout → verify → advantage → mini-batch updates → log.

The loop follows the objective library's trainer contract (``steer_bench.algos`` module docstring) with
the tabular policy as the model; every method is a preset of ``configs/methods/`` run through the
library's resolved ``Method`` (advantages, mini-batch statistics, loss): nothing method-specific lives
here. A mini-batch is one call (no micro-batching), so the library's per-call statistics are per
mini-batch (STEER ``micro`` and ``mini`` scopes coincide). The optimiser is plain SGD on the logit table
without gradient clipping: the exact setting of the first-order entropy analysis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from steer_bench.algos import Method, TokenBatch, Totals, logprobs_and_entropy
from steer_bench.errors import SteerBenchError
from steer_bench.tree.config import SettingConfig
from steer_bench.tree.policy import TabularPolicy
from steer_bench.tree.probe import probe_metrics, probe_step, state_entropy
from steer_bench.tree.task import TreeTask, make_task, pass_at_k

TINY = 1e-3  # the first-order probe's step, relative to the training step


@dataclass
class RunLog:
    """Rows of one run: one dict per step (``step`` = updates done so far), and the probes' raw points."""

    rows: list[dict[str, float]] = field(default_factory=list)
    points: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class Rollout:
    problems: torch.Tensor  # (B,) problem of each response = its group id
    responses: torch.Tensor  # (B, D)
    state_ids: torch.Tensor  # (B, D)
    scores: torch.Tensor  # (B,)
    old_logp: torch.Tensor  # (B, D)
    old_entropy: torch.Tensor  # (B, D)


def exact_metrics(policy: TabularPolicy, task: TreeTask, pass_k: list[int]) -> dict[str, float]:
    """Exact expected accuracy, expected token entropy of a rollout and pass@k, averaged over all problems."""
    with torch.no_grad():
        occ, acc = task.occupancy(policy.probs())
        entropy = task.expected_entropy(occ, state_entropy(policy.table))
    out = {"exact/accuracy": float(acc.mean()), "exact/entropy": float(entropy.mean())}
    for k in pass_k:
        out[f"exact/pass_at_{k}"] = float(pass_at_k(acc, k).mean())
    return out


@torch.no_grad()
def rollout(policy: TabularPolicy, task: TreeTask, problems: torch.Tensor, gen: torch.Generator) -> Rollout:
    responses = policy.sample(problems, gen)
    state_ids = task.state_ids(problems, responses)
    old_logp, old_entropy = logprobs_and_entropy(policy.table[state_ids], responses, temperature=1.0)
    return Rollout(problems, responses, state_ids, task.score(problems, responses), old_logp, old_entropy)


def update(
    policy: TabularPolicy,
    lr: float,
    batch: Rollout,
    adv: torch.Tensor,
    method: Method,
    minibatches: tuple[torch.Tensor, ...],
    gen: torch.Generator,
    entropy_coef: float | None = None,
) -> list[dict[str, Any]]:
    """One optimizer step per mini-batch (the rollout's rows of each, in the order given); the calls' metrics."""
    mask = torch.ones_like(adv, dtype=torch.bool)
    m = method
    calls = []
    step_stats = m.step_stats(batch.old_entropy, mask)  # STARE's gate over the step batch; None for the others
    for rows in minibatches:
        logits = policy.table[batch.state_ids[rows]]
        logp, entropy = logprobs_and_entropy(logits, batch.responses[rows], temperature=1.0)
        old = batch.old_logp[rows]  # the sampler is π_old itself: rollout log-probs = π_old's (ρ = 1 exactly)
        tokens = TokenBatch(logp, old, adv[rows], mask[rows], entropy, batch.old_entropy[rows], gen, old)
        stats = step_stats if m.needs.step_stats else m.mini_batch_stats(tokens)  # one call per mini-batch
        loss, metrics = m.loss(tokens, Totals(max_response_len=policy.task.D), stats, entropy_coef)
        if not torch.isfinite(loss):
            raise SteerBenchError(f"method {method.name!r}: the loss is {loss.item()}")
        (grad,) = torch.autograd.grad(loss, policy.table)
        with torch.no_grad():
            policy.table.sub_(lr * grad)  # SGD
        calls.append(metrics)
    return calls


def rollout_metrics(batch: Rollout, adv: torch.Tensor, n: int) -> dict[str, float]:
    scores = batch.scores.view(-1, n)
    return {
        "rollout/accuracy": float(batch.scores.mean()),
        "rollout/entropy": float(batch.old_entropy.mean()),
        "rollout/all_equal_groups": float((scores == scores[:, :1]).all(-1).double().mean()),
        "rollout/adv_abs_mean": float(adv.abs().mean()),
    }


def analyse(
    policy: TabularPolicy, batch: Rollout, adv: torch.Tensor, rows: torch.Tensor, lr: float
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Probe the first mini-batch's update at the training step size and at TINY times it (see ``probe``).

    Returns the probes' metrics and their raw points (one per visited state: ΔH and each prediction).
    """
    metrics, points = {}, []
    results = probe_step(policy.table, batch.state_ids[rows], batch.responses[rows], adv[rows], lrs=(lr, lr * TINY))
    for prefix, result in zip(("probe", "probe_tiny"), results, strict=True):
        metrics |= probe_metrics(result, prefix, quadrants=prefix == "probe")  # shares are scale-free
        preds = {k: v.tolist() for k, v in result.predictions.items()}
        for i, dh in enumerate(result.delta_h.tolist()):
            points.append({"probe": prefix, "delta_h": dh} | {k: v[i] for k, v in preds.items()})
    return metrics, points


def train_run(
    setting: SettingConfig, method: Method, *, lr: float, seed: int, keep_points: bool, log: RunLog
) -> RunLog:
    """Train one method (its preset resolved once, by the caller) from the seed's task and initial table (paired
    across methods), appending every step's metrics to ``log`` (so that the steps before a divergence survive it)."""
    cfg = setting.train
    task = make_task(setting.task, seed)
    policy = TabularPolicy(task, init_std=cfg.init_std, seed=seed)
    gen = torch.Generator().manual_seed(seed)  # the data stream: problems, samples, mini-batch order
    n = cfg.samples_per_problem
    coef_state: float | None = None  # the controller's state (adaptive coefficient, EntroPIC's integral)
    for step in range(cfg.steps + 1):
        row: dict[str, float] = {"step": step}
        if step % cfg.eval_every == 0 or step == cfg.steps:
            row |= exact_metrics(policy, task, cfg.pass_k)
        if step == cfg.steps:
            log.rows.append(row)
            break
        problems = torch.randperm(task.P, generator=gen)[: cfg.problems_per_step].repeat_interleave(n)
        batch = rollout(policy, task, problems, gen)
        mask = torch.ones_like(batch.old_logp)
        adv = method.advantages(  # step + 1: the first update is step 1 (verl's global_steps)
            batch.scores, problems, mask, old_entropy=batch.old_entropy, step=step + 1, total_steps=cfg.steps
        )
        order = torch.randperm(len(problems), generator=gen) if cfg.shuffle else torch.arange(len(problems))
        minibatches = order.chunk(cfg.minibatches)
        if cfg.analysis_every and step % cfg.analysis_every == 0:
            metrics, points = analyse(policy, batch, adv, minibatches[0], lr)
            row |= metrics
            if keep_points:
                log.points += [{"step": step} | p for p in points]
        coef, coef_state = method.entropy_coef_step(
            coef_state, float(batch.old_entropy.mean()), step=step, total_steps=cfg.steps
        )
        calls = update(policy, lr, batch, adv, method, minibatches, gen, coef)
        row |= rollout_metrics(batch, adv, n) | method.reduce_metrics(calls)
        if not math.isfinite(row["rollout/entropy"]):
            raise SteerBenchError(f"method {method.name!r} seed {seed}: non-finite entropy at step {step}")
        log.rows.append(row)
    return log

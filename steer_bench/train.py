"""The RL loop, top to bottom: rollout → grade → advantage → old log-probs + entropy → mini-batch updates
(micro-batch gradient accumulation) → metrics → MLflow → checkpoint.

One code path for the CPU miniature and the paper recipe; methods differ only in the advantage estimator
and the per-token policy loss named by the method preset (``steer_bench.algos``). Reproducibility: every
random draw of step s comes from generators seeded by (seed, s), so a run resumed from its step-k
checkpoint replays steps k+1.. exactly as an uninterrupted run would (on CPU).

Layout of a run directory (``results/<exp>/runs/<method>/seed<k>/``)::

    config.yaml  method.yaml  env.json       resolved configs, versions, git commit
    metrics.jsonl                            one line per step (the file MLflow mirrors)
    rollouts/step_000010.jsonl               sample rollouts (prompt, response, reward, entropy)
    checkpoints/last/  checkpoints/best/     HF model folders; last also holds the trainer state
    train.done                               final summary, written last (Snakemake's target)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from steer_bench import io
from steer_bench.algos import compute_advantages, mini_batch_stats, policy_loss, reduce_metrics
from steer_bench.batching import loss_factor, loss_totals, order_for_update
from steer_bench.checkpoint import TrainState, is_resumable, load_trainer_state, save_checkpoint, truncate_metrics
from steer_bench.config import dump_yaml
from steer_bench.distributed import (
    global_totals,
    param_checksums,
    prepare,
    reduce_across_ranks,
    shard_fsdp2,
    sync_mini_stats,
)
from steer_bench.errors import NonFiniteError, SteerBenchError
from steer_bench.grading import Grader
from steer_bench.guards import check_token_values, check_weights
from steer_bench.inputs import check_same_architecture
from steer_bench.methods import MethodConfig, load_method
from steer_bench.policy import fit_prompts, load_policy, pad_to, select_rows
from steer_bench.release_grading import reward_correct
from steer_bench.rollout import SamplingParams, make_engine
from steer_bench.rollout.batch import PaddedRollout, score_responses
from steer_bench.runconfig import TrainConfig
from steer_bench.stepstats import dump_rollouts, rollout_metrics
from steer_bench.validation import load_validation, selectable, validate

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- setup
def check_run(cfg: TrainConfig, method: MethodConfig, context_len: int | None, world_size: int) -> None:
    """Checks that need the method, the model and the launch: fail before any compute, naming the culprit."""
    if method.needs_groups and cfg.rollout.n < 2:
        raise SteerBenchError(
            f"method {method.name!r} compares responses within a group: rollout.n must be ≥ 2, got {cfg.rollout.n}"
        )
    if context_len is not None and cfg.max_prompt_len + cfg.rollout.max_new_tokens > context_len:
        raise SteerBenchError(
            f"max_prompt_len ({cfg.max_prompt_len}) + rollout.max_new_tokens ({cfg.rollout.max_new_tokens}) "
            f"exceeds the context of {cfg.model.path} ({context_len} tokens)"
        )
    for name in ("prompts_per_step", "mini_batch_prompts"):
        if getattr(cfg, name) % world_size:
            raise SteerBenchError(f"{name} ({getattr(cfg, name)}) must be divisible by the {world_size} processes")
    if cfg.rollout.engine == "vllm":  # an engine that cannot start in this world fails before the model is prepared
        from steer_bench.rollout.vllm import launch_backend

        launch_backend(world_size, cfg.rollout.vllm.tensor_parallel_size)


def step_seed(seed: int, step: int) -> int:
    """The seed of every random draw in one step: a pure function of (seed, step), so resume replays exactly."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def prompt_order(n_prompts: int, seed: int, step: int, per_step: int) -> list[int]:
    """Indices of the prompts of ``step`` (1-based): epochs of seeded permutations, consumed in order."""
    start = (step - 1) * per_step
    out: list[int] = []
    while len(out) < per_step:
        epoch, offset = divmod(start + len(out), n_prompts)
        perm = np.random.default_rng([seed, epoch]).permutation(n_prompts)
        out.extend(perm[offset : offset + per_step - len(out)].tolist())
    return out


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> tuple[torch.optim.Optimizer, Any]:
    from transformers import get_scheduler

    o = cfg.optim
    opt = torch.optim.AdamW(model.parameters(), lr=o.lr, betas=o.betas, eps=o.eps, weight_decay=o.weight_decay)
    name = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}[o.schedule]
    total = cfg.steps * cfg.updates_per_rollout
    return opt, get_scheduler(name, opt, num_warmup_steps=o.warmup_steps, num_training_steps=total)


# ---------------------------------------------------------------------------------------------- forward passes
def forward(model: Any, batch: PaddedRollout, rows: torch.Tensor, temperature: float) -> tuple[torch.Tensor, ...]:
    """(logp, entropy), each (len(rows), T) of the full batch's T, for the sub-batch ``rows``."""
    sub = select_rows(batch, rows)
    logp, entropy = score_responses(model, sub, temperature=temperature)
    t = batch.response_mask.shape[1]
    return pad_to(logp, t), pad_to(entropy, t)


def micro_batches(rows: torch.Tensor, size: int) -> list[torch.Tensor]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@torch.no_grad()
def rollout_logprobs(model: Any, batch: PaddedRollout, cfg: TrainConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probs and entropy of the rollout policy in one no-grad pass, reused by every mini-batch update
    (as π_old), by STEER's Ω and entropy-aware advantages (as H), and by the entropy metrics."""
    model.eval()
    parts = [
        forward(model, batch, r, cfg.rollout.temperature)
        for r in micro_batches(torch.arange(len(batch.input_ids)), cfg.micro_batch_size)
    ]
    logp, entropy = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    check_token_values(
        {"the old log-prob": logp, "the old entropy": entropy}, batch.response_mask, where="(π_old pass)"
    )
    return logp, entropy


# ---------------------------------------------------------------------------------------------- update
def policy_update(
    model: Any,
    optimizer: Any,
    scheduler: Any,
    accelerator: Accelerator,
    batch: PaddedRollout,
    old: tuple[torch.Tensor, torch.Tensor],
    adv: torch.Tensor,
    method: MethodConfig,
    cfg: TrainConfig,
    probe: Any = None,
) -> dict[str, float]:
    """``updates_per_rollout`` optimizer steps on one rollout batch; returns the reduced loss metrics.

    ``probe`` (entropy-dynamics analysis) is told the rows of the first mini-batch right before and right
    after its optimizer step, to measure every token's entropy change across exactly one update.
    """
    old_logp, old_entropy = old
    mask = batch.response_mask
    mini = cfg.mini_batch_prompts * cfg.rollout.n // accelerator.num_processes
    calls: list[dict[str, Any]] = []
    grad_norms: list[float] = []
    model.train()
    for epoch in range(cfg.ppo_epochs):
        for start in range(0, len(mask), mini):
            rows = torch.arange(start, min(start + mini, len(mask)))
            extra = {}
            if method.needs_mini_stats:  # STEER scope=mini / fork tokens: one no-grad pass over the mini-batch
                with torch.no_grad():
                    cur = [
                        forward(model, batch, r, cfg.rollout.temperature)
                        for r in micro_batches(rows, cfg.micro_batch_size)
                    ]
                extra = mini_batch_stats(
                    method.loss.name,
                    torch.cat([c[0] for c in cur]),
                    old_logp[rows],
                    adv[rows],
                    mask[rows],
                    entropy=torch.cat([c[1] for c in cur]),
                    old_entropy=old_entropy[rows],
                    **method.loss_params(),
                )
                extra = sync_mini_stats(extra, accelerator)
            totals = global_totals(mask[rows], accelerator) | {"max_response_len": cfg.rollout.max_new_tokens}
            totals = loss_totals(cfg.loss_scale, totals)  # release: each micro-batch's own counts
            optimizer.zero_grad(set_to_none=True)
            micro = micro_batches(rows, cfg.micro_batch_size)
            for j, mrows in enumerate(micro):
                sync = contextlib.nullcontext() if j == len(micro) - 1 else accelerator.no_sync(model)
                with sync:
                    logp, entropy = forward(model, batch, mrows, cfg.rollout.temperature)
                    loss, metrics = policy_loss(
                        method.loss.name,
                        logp,
                        old_logp[mrows],
                        adv[mrows],
                        mask[mrows],
                        entropy=entropy,
                        old_entropy=old_entropy[mrows],
                        **method.loss_params(),
                        **totals,
                        **extra,
                    )
                    if not torch.isfinite(loss):
                        raise NonFiniteError(f"the loss is {loss.item()} (rows {mrows[0].item()}..{mrows[-1].item()})")
                    # global_tokens: global denominators, ×W undoes DDP's mean; release: ÷ accumulation steps.
                    accelerator.backward(loss * loss_factor(cfg.loss_scale, len(micro), accelerator.num_processes))
                calls.append(metrics)
            grad_norm = float(accelerator.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip))
            if not np.isfinite(grad_norm):
                raise NonFiniteError(f"the gradient norm is {grad_norm}")
            grad_norms.append(grad_norm)
            first = probe is not None and epoch == 0 and start == 0
            if first:
                probe.before(model, rows)
            optimizer.step()
            check_weights(model, accelerator, where=f"after the optimizer step on rows {start}..{rows[-1].item()}")
            scheduler.step()
            if first:
                probe.after(model, rows)
    return reduce_metrics(calls) | {
        "train/grad_norm": float(np.mean(grad_norms)),
        "train/grad_norm_max": float(np.max(grad_norms)),
        "train/lr": float(scheduler.get_last_lr()[0]),
    }


# ---------------------------------------------------------------------------------------------- the loop
def train(cfg: TrainConfig, method: MethodConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) one training run into ``out_dir``; returns the summary also written to ``train.done``."""
    from steer_bench.data import load_prepared
    from steer_bench.tracking import Tracker, env_info, headline_metrics, resolve_uri, train_run_tags

    out = Path(out_dir)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=cfg.mixed_precision)
    main, rank = accelerator.is_main_process, accelerator.process_index
    last_dir, best_dir = out / "checkpoints" / "last", out / "checkpoints" / "best"
    if main:  # a run killed while saving: put the complete previous checkpoint back
        io.recover_atomic_dir(last_dir)
        io.recover_atomic_dir(best_dir)
    accelerator.wait_for_everyone()
    resume = is_resumable(last_dir)
    if resume:
        check_same_architecture(last_dir, cfg.model.path)

    seed_everything(cfg.seed)
    policy = load_policy(cfg.model, path=str(last_dir) if resume else None)
    model, tokenizer = policy.model, policy.tokenizer
    check_run(cfg, method, policy.context_len, accelerator.num_processes)
    problems = load_prepared(cfg.data.train)
    problems = problems.head(cfg.data.limit) if cfg.data.limit else problems
    problems, prompts, dropped = fit_prompts(
        tokenizer, problems, max_len=cfg.max_prompt_len, source=cfg.data.train, on_long=cfg.on_long_prompt
    )
    golds = problems["answer"].tolist()
    val = load_validation(cfg, tokenizer)

    if cfg.shard == "fsdp2":
        model = shard_fsdp2(model, accelerator)  # before the optimizer: it must see the sharded parameters
    optimizer, scheduler = make_optimizer(model, cfg)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler, shard=cfg.shard)
    state = load_trainer_state(last_dir, optimizer, scheduler) if resume else TrainState()
    if resume:
        truncate_metrics(out / "metrics.jsonl", state.step)
        log.info("resuming %s after step %d", out, state.step)
    env = env_info()
    if main:
        io.write_text(out / "config.yaml", dump_yaml(cfg))
        io.write_text(out / "method.yaml", dump_yaml(method))
        io.write_json(out / "env.json", env)
    run_name = f"{method.name}-seed{cfg.seed}"
    tracker = Tracker(
        cfg.experiment,
        run_name=run_name,
        run_id=state.mlflow_run_id,
        enabled=main and cfg.track,
        uri=resolve_uri(cfg.tracking_db) if main and cfg.track else None,
        tags=train_run_tags(method.name, cfg.seed, out),
    )
    state.mlflow_run_id = tracker.run_id
    tracker.log_params({"config": cfg.model_dump(mode="json"), "method": method.model_dump(mode="json"), "env": env})

    engine = make_engine(
        cfg.rollout.engine,
        accelerator.unwrap_model(model),
        tokenizer,
        **engine_options(cfg, str(last_dir) if resume else cfg.model.path),
    )
    share = cfg.prompts_per_step // accelerator.num_processes
    metrics: dict[str, float] = {}
    status, step = "FAILED", state.step
    try:
        with Grader(workers=cfg.reward.workers, timeout=cfg.reward.timeout_s, primary=cfg.reward.grader) as grader:
            bar = tqdm(
                range(state.step + 1, cfg.steps + 1),
                initial=state.step,
                total=cfg.steps,
                disable=not main,
                desc=run_name,
            )
            for step in bar:
                seed_everything(step_seed(cfg.seed, step) + rank)
                t0 = time.perf_counter()
                idx = prompt_order(len(prompts), cfg.seed, step, cfg.prompts_per_step)[rank * share :][:share]
                engine.sync_weights(accelerator.unwrap_model(model))
                sampling = SamplingParams(
                    max_new_tokens=cfg.rollout.max_new_tokens,
                    temperature=cfg.rollout.temperature,
                    top_p=cfg.rollout.top_p,
                    n=cfg.rollout.n,
                    seed=step_seed(cfg.seed, step) + rank,
                )
                rollout = engine.generate([prompts[i] for i in idx], sampling)
                t1 = time.perf_counter()

                texts = tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
                verdicts = grader.grade(texts, [golds[idx[p]] for p in rollout.prompt_index])
                r = cfg.reward  # the grader's verdict, unless truncation forces the incorrect score
                correct = torch.tensor(reward_correct(verdicts, rollout.truncated, grader=r.grader, rule=r.truncated))
                scores = torch.where(correct, cfg.reward.correct, cfg.reward.incorrect).float().to(accelerator.device)
                t2 = time.perf_counter()

                batch = rollout.padded(tokenizer.pad_token_id).to(accelerator.device)
                old = rollout_logprobs(model, batch, cfg)
                group_ids = torch.as_tensor(rollout.prompt_index, device=accelerator.device)
                adv = compute_advantages(
                    method.advantage.estimator,
                    scores,
                    group_ids,
                    batch.response_mask,
                    entropy=old[1],
                    **method.advantage_params(),
                )
                t3 = time.perf_counter()

                # The rows this rank updates on (batch_order: release exchanges them across ranks).
                ubatch, uold, uadv = order_for_update(
                    cfg.batch_order, batch, old, adv, accelerator, tokenizer.pad_token_id
                )
                probe = None
                if cfg.analysis.every_n_steps and step % cfg.analysis.every_n_steps == 0:
                    from steer_bench.analysis import EntropyProbe

                    probe = EntropyProbe(step, method, cfg, ubatch, uold, uadv, forward=forward)
                metrics = policy_update(
                    model, optimizer, scheduler, accelerator, ubatch, uold, uadv, method, cfg, probe
                )
                if probe is not None:  # metrics on every rank (reduced below); the main process writes its rows
                    metrics |= probe.save(out / "analysis" / f"step_{step:06d}.parquet") if main else probe.metrics()
                t4 = time.perf_counter()
                metrics |= rollout_metrics(batch, rollout.truncated, verdicts, scores, adv, *old, group_ids)
                metrics |= engine.sync_metrics()
                metrics |= {
                    "time/rollout": t1 - t0,
                    "time/grading": t2 - t1,
                    "time/old_logprobs": t3 - t2,
                    "time/update": t4 - t3,
                    "time/step": t4 - t0,
                    "perf/tokens_per_s": float(batch.response_mask.sum()) / max(t4 - t0, 1e-9),
                    "data/prompts_dropped": float(len(dropped)),  # over max_prompt_len (on_long_prompt: drop)
                    "batch/update_tokens_max": float(ubatch.attention_mask.sum()),  # over ranks: max and min
                    "batch/update_tokens_min": float(ubatch.attention_mask.sum()),
                }
                metrics = reduce_across_ranks(metrics, accelerator)
                if cfg.validation.every_n_steps and step % cfg.validation.every_n_steps == 0:
                    engine.sync_weights(accelerator.unwrap_model(model))  # validate the updated policy, not π_old
                    metrics |= validate(engine, tokenizer, val, cfg, grader, step_seed(cfg.seed, step) + 999_983)
                metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}  # absent = undefined this step
                state.step = step
                if val is not None and selectable(cfg, step) and _is_best(metrics.get(cfg.validation.metric), state):
                    state.best_metric, state.best_step = metrics[cfg.validation.metric], step
                    save_checkpoint(best_dir, accelerator, model, tokenizer, state)
                if main:
                    io.append_jsonl(out / "metrics.jsonl", {"step": step, **metrics})
                    tracker.log_metrics(metrics, step=step)
                    if cfg.log_rollouts_every and step % cfg.log_rollouts_every == 0:
                        dump_rollouts(
                            out / "rollouts" / f"step_{step:06d}.jsonl",
                            problems,
                            idx,
                            rollout,
                            texts,
                            verdicts,
                            scores,
                            batch,
                            old[1],
                        )
                bar.set_postfix(
                    reward=f"{metrics['rollout/reward_mean']:.3f}", entropy=f"{metrics['rollout/entropy_mean']:.3f}"
                )
                if step % cfg.save_every == 0 or step == cfg.steps:
                    save_checkpoint(
                        last_dir, accelerator, model, tokenizer, state, optimizer=optimizer, scheduler=scheduler
                    )
        status = "FINISHED"
    except NonFiniteError as e:
        kept = io.read_json(last_dir / "state.json")["step"] if is_resumable(last_dir) else None
        raise NonFiniteError(
            f"{out}: step {step}: {e}. Stopped; last good checkpoint: "
            f"{f'{last_dir} (step {kept})' if kept is not None else 'none yet'}"
        ) from None
    finally:
        engine.close()
        tracker.finish(status)
    checksums = param_checksums(model, accelerator)
    summary = {
        "param_checksums": checksums,
        "method": method.name,
        "seed": cfg.seed,
        "steps": cfg.steps,
        "mlflow_run_id": tracker.run_id,
        "best_step": state.best_step,
        "best_metric": state.best_metric,
        "final": metrics,
    }
    tracker.log_metrics(headline_metrics(summary), step=state.step)  # the runs table's columns (a finished run)
    if tracker.error:  # the files are complete; `steer-bench report` re-mirrors them into MLflow
        summary["tracking_error"] = tracker.error
        log.warning("%s: finished, but MLflow mirroring failed: %s", out, tracker.error)
    if main:
        io.write_json(out / "train.done", summary)
    return summary


def engine_options(cfg: TrainConfig, model_path: str) -> dict[str, Any]:
    """vLLM starts from the weights on disk (the trainer's model equals them); hf needs nothing."""
    if cfg.rollout.engine == "hf":
        return {}
    return {
        "model_path": model_path,
        "seed": cfg.seed,
        "max_model_len": cfg.max_prompt_len + cfg.rollout.max_new_tokens,
        **cfg.rollout.vllm.model_dump(),
    }


def _is_best(value: float | None, state: TrainState) -> bool:
    return value is not None and np.isfinite(value) and (state.best_metric is None or value > state.best_metric)


# ---------------------------------------------------------------------------------------------- validation, files
# ---------------------------------------------------------------------------------------------- CLI
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="experiment YAML (its 'train' section is the recipe)")
    parser.add_argument("--method", required=True, help="method preset (configs/methods/<name>.yaml)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", help="run directory (default: results/<experiment>/runs/<method>/seed<seed>)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="train override key=value")
    parser.add_argument(
        "--method-set", dest="method_overrides", action="append", default=[], help="method preset override key=value"
    )


def run(args: argparse.Namespace) -> int:
    from steer_bench.experiment import load_experiment

    exp = load_experiment(args.config)
    cfg = exp.train_config(args.seed, args.overrides)
    method = load_method(args.method, [*exp.method_overrides.get(args.method, []), *args.method_overrides])
    train(cfg, method, args.out or exp.run_dir(args.method, args.seed))
    return 0

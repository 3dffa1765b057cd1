"""The RL loop as named phases, read top to bottom: set up → per step: collect (rollout → grading →
advantages → π_old's log-probs) → update (mini-batch optimizer steps) → log (metrics, validation, files,
MLflow) → checkpoint → finish.

One code path for the CPU miniature and the paper recipe; methods differ only in the resolved
:class:`~steer_bench.algos.Method` (advantages, optional mini-batch statistics, per-micro-batch loss).
Reproducibility: every random draw of step s comes from generators seeded by (seed, s), so a run resumed
from its step-k checkpoint replays steps k+1.. exactly as an uninterrupted run would (on CPU).
A watchdog (:mod:`steer_bench.train.watchdog`) ends the job naming a rank that stops or dies, and turns a
preemption's SIGTERM into a checkpoint of the step in progress.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from steer_bench import files
from steer_bench.analysis import EntropyProbe
from steer_bench.config.method import MethodConfig
from steer_bench.config.run import TrainConfig
from steer_bench.errors import NonFiniteError
from steer_bench.grading import Grader
from steer_bench.grading.release import reward_correct
from steer_bench.rollout import SamplingParams
from steer_bench.tracking import headline_metrics
from steer_bench.train.batching import order_for_update
from steer_bench.train.checkpoint import hf_dtype, is_resumable, save_checkpoint
from steer_bench.train.distributed import param_checksums, rank_reduce, reduce_across_ranks
from steer_bench.train.heldout import selectable, validate
from steer_bench.train.probeset import ProbeSet, load_probe_set, measure
from steer_bench.train.setup import Run, prompt_order, rollout_seed, seed_everything, set_up, step_seed
from steer_bench.train.stepstats import Step, dump_rollouts, rollout_metrics
from steer_bench.train.update import UpdateRows, engine_logprobs, forward, policy_update, rollout_logprobs
from steer_bench.train.watchdog import Preempted, Watchdog

log = logging.getLogger(__name__)


def train(cfg: TrainConfig, preset: MethodConfig, out_dir: str | Path) -> dict[str, Any]:
    """Run (or resume) one training run into ``out_dir``; returns the summary also written to ``train.done``."""
    watchdog = Watchdog.start(cfg.heartbeat_timeout_s)  # before set-up: a rank stuck loading is named too
    try:
        return _train(cfg, preset, Path(out_dir), watchdog)
    except Exception:
        watchdog.check_now()  # a collective that failed because a peer died or stopped: end the job naming it
        raise
    finally:
        watchdog.close()


def _train(cfg: TrainConfig, preset: MethodConfig, out_dir: Path, watchdog: Watchdog) -> dict[str, Any]:
    run = set_up(cfg, preset, out_dir)
    watchdog.follow(run.phases)
    probe = load_probe_set(cfg, run.tokenizer)  # fixed held-out prompts whose entropy is measured (None: off)
    if run.state.step:
        log.info("resuming %s after step %d", run.out, run.state.step)
    status, number, final = "FAILED", run.state.step, {}
    try:
        with Grader(workers=cfg.reward.workers, timeout=cfg.reward.timeout_s, primary=cfg.reward.grader) as grader:
            if probe is not None and run.state.step == 0:  # the starting policy's probe, as step 0's metrics
                record(run, 0, measure(run, probe, grader))
            bar = tqdm(
                range(run.state.step + 1, cfg.steps + 1),
                initial=run.state.step,
                total=cfg.steps,
                disable=not run.main,
                desc=run.name,
            )
            for number in bar:
                watchdog.step = number
                with run.phases.phase("collect"):
                    step = collect(run, grader, number)
                with run.phases.phase("update"):
                    update(run, step)
                log_step(run, step, grader, probe)
                bar.set_postfix(
                    reward=f"{step.metrics['rollout/reward_mean']:.3f}",
                    entropy=f"{step.metrics['rollout/entropy_mean']:.3f}",
                )
                stop = watchdog.preempted(run.accelerator)  # SIGTERM on any rank: checkpoint this step, stop
                checkpoint(run, step, now=stop)
                final = step.metrics
                if stop and number < cfg.steps:
                    raise Preempted(
                        f"{run.out}: SIGTERM (a preemption or requeue): stopped after step {number}, checkpointed in "
                        f"{run.last_dir}; the next run resumes from it"
                    )
        status = "FINISHED"
    except Preempted:
        status = "KILLED"
        raise
    except NonFiniteError as e:
        kept = files.read_json(run.last_dir / "state.json")["step"] if is_resumable(run.last_dir) else None
        raise NonFiniteError(
            f"{run.out}: step {number}: {e}. Stopped; last good checkpoint: "
            f"{f'{run.last_dir} (step {kept})' if kept is not None else 'none yet'}"
        ) from None
    finally:
        run.engine.close()
        run.tracker.finish(status)
    return finish(run, final)


# ---------------------------------------------------------------------------------------------- collect
def collect(run: Run, grader: Grader, number: int) -> Step:
    """Rollout → grading → π_old's log-probs and entropy → advantages, for this rank's share of the prompts."""
    cfg, acc, tokenizer = run.cfg, run.accelerator, run.tokenizer
    rank, share = acc.process_index, cfg.prompts_per_step // acc.num_processes
    seed_everything(step_seed(cfg.seed, number) + rank)
    run.startup.setdefault("first_rollout_unix", time.time())  # benchmarks/startup.py: process start → here
    t0 = time.perf_counter()
    idx = prompt_order(len(run.prompts), cfg.seed, number, cfg.prompts_per_step)[rank * share :][:share]
    run.engine.sync_weights(acc.unwrap_model(run.model))
    sampling = SamplingParams(
        max_new_tokens=cfg.rollout.max_new_tokens,
        temperature=cfg.rollout.temperature,
        top_p=cfg.rollout.top_p,
        n=cfg.rollout.n,
        seed=rollout_seed(cfg.seed, number, rank, share, cfg.rollout.n),
        ignore_eos=cfg.rollout.ignore_eos,
    )
    rollout = run.engine.generate([run.prompts[i] for i in idx], sampling)
    t1 = time.perf_counter()

    golds = run.problems["answer"].tolist()
    texts = tokenizer.batch_decode(rollout.response_ids, skip_special_tokens=True)
    verdicts = grader.grade(texts, [golds[idx[p]] for p in rollout.prompt_index])
    r = cfg.reward  # the grader's verdict, unless truncation forces the incorrect score
    correct = torch.tensor(reward_correct(verdicts, rollout.truncated, grader=r.grader, rule=r.truncated))
    scores = torch.where(correct, r.correct, r.incorrect).float().to(acc.device)
    t2 = time.perf_counter()

    batch = rollout.padded(tokenizer.pad_token_id).to(acc.device)
    if cfg.old_logprobs == "rollout":
        old_logp, old_entropy = engine_logprobs(rollout, batch)
    else:
        old_logp, old_entropy = rollout_logprobs(run.model, batch, cfg)
    group_ids = torch.as_tensor(rollout.prompt_index, device=acc.device)
    schedule: dict[str, Any] = {}  # a schedule (grpo_range_linear): step k of T, H over every rank's tokens
    if run.method.advantage.needs_step:
        h = mean_entropy(run, old_entropy, batch.response_mask)
        schedule = {"step": number, "total_steps": cfg.steps, "step_entropy": h}
    adv = run.method.advantages(scores, group_ids, batch.response_mask, old_entropy=old_entropy, **schedule)
    t3 = time.perf_counter()
    times = {"rollout": t1 - t0, "grading": t2 - t1, "old_logprobs": t3 - t2, "start": t0}
    return Step(
        number=number,
        prompts=idx,
        rollout=rollout,
        texts=texts,
        verdicts=verdicts,
        scores=scores,
        batch=batch,
        old_logp=old_logp,
        old_entropy=old_entropy,
        group_ids=group_ids,
        adv=adv,
        times=times,
    )


# ---------------------------------------------------------------------------------------------- update
def update(run: Run, step: Step) -> None:
    """The mini-batch updates on this rank's rows (``batch_order``: release exchanges them across ranks),
    with the entropy-dynamics probe on the steps the analysis samples."""
    cfg, acc = run.cfg, run.accelerator
    t3 = time.perf_counter()
    old = (step.old_logp, step.old_entropy)
    ubatch, uold, uadv = order_for_update(cfg.batch_order, step.batch, old, step.adv, acc, run.tokenizer.pad_token_id)
    probe = None
    if cfg.analysis.every_n_steps and step.number % cfg.analysis.every_n_steps == 0:
        probe = EntropyProbe(step.number, run.method, cfg, ubatch, uold, uadv, forward=forward)
    rows = UpdateRows(ubatch, uold, uadv)
    coef = entropy_coef(run, step)  # the adaptive entropy coefficient's state crosses steps (run.state)
    metrics = policy_update(run.learner, rows, run.method, cfg, probe=probe, entropy_coef=coef)
    if probe is not None:  # metrics on every rank (reduced later); the main process writes its rows
        path = run.out / "analysis" / f"step_{step.number:06d}.parquet"
        metrics |= probe.save(path) if run.main else probe.metrics()
    step.times["update"] = time.perf_counter() - t3
    step.metrics = metrics
    step.metrics["batch/update_tokens"] = float(ubatch.attention_mask.sum())


def entropy_coef(run: Run, step: Step) -> float | None:
    """This step's controller value (the coefficient of the regulariser it drives: the entropy bonus's; EntroPIC's
    term's α) and the controller's next state
    (kept in ``run.state``, so in the checkpoint) from the step's mean π_old entropy over every rank's valid tokens
    and the step number (an entropy schedule: a function of the step alone); None without a controller."""
    method = run.method
    if not method.has_controller:
        return None
    entropy = None
    if method.controller is not None and method.controller.reads_entropy:
        entropy = mean_entropy(run, step.old_entropy, step.batch.response_mask)
    coef, run.state.entropy_coef = method.entropy_coef_step(
        run.state.entropy_coef, entropy, step=step.number - 1, total_steps=run.cfg.steps
    )
    return coef


def mean_entropy(run: Run, old_entropy: torch.Tensor, mask: torch.Tensor) -> float:
    """The step's mean π_old token entropy over every rank's valid tokens (sum and count reduced over ranks)."""
    totals = torch.stack([(old_entropy * mask).sum(), mask.sum()]).double()
    totals = rank_reduce(run.accelerator)(totals, "sum")
    return float(totals[0] / totals[1])


# ---------------------------------------------------------------------------------------------- log
def log_step(run: Run, step: Step, grader: Grader, probe: ProbeSet | None) -> None:
    """Step metrics over ranks, validation, the probe set, the best checkpoint, metrics.jsonl, MLflow and sample
    rollouts."""
    cfg, state, acc = run.cfg, run.state, run.accelerator
    t4 = time.perf_counter()
    t0, update_tokens = step.times.pop("start"), step.metrics.pop("batch/update_tokens")
    metrics = step.metrics
    metrics |= rollout_metrics(step)
    metrics |= run.engine.sync_metrics()
    metrics |= {f"time/{k}": v for k, v in step.times.items()} | {"time/step": t4 - t0}
    metrics |= {
        "perf/tokens_per_s": float(step.batch.response_mask.sum()) / max(t4 - t0, 1e-9),
        "data/prompts_dropped": float(len(run.dropped)),  # over max_prompt_len (on_long_prompt: drop)
        "batch/update_tokens_max": update_tokens,  # over ranks: max and min
        "batch/update_tokens_min": update_tokens,
    }
    metrics = reduce_across_ranks(metrics | run.phases.step_metrics(), acc)
    if run.validation is not None and step.number % cfg.validation.every_n_steps == 0:  # None: no validation
        with run.phases.phase("validation"):
            run.engine.sync_weights(acc.unwrap_model(run.model))  # validate the updated policy, not π_old
            seed = step_seed(cfg.seed, step.number) + 999_983
            metrics |= validate(run.engine, run.tokenizer, run.validation, cfg, grader, seed)
            if run.selection is not None:  # the disjoint selection set: same policy, same seed
                metrics |= validate(run.engine, run.tokenizer, run.selection, cfg, grader, seed, prefix="sel/")
        metrics |= reduce_across_ranks(run.phases.step_metrics(), acc)
    if probe is not None and step.number % cfg.probe.every_n_steps == 0:
        with run.phases.phase("probe", step_metric=False):
            metrics |= measure(run, probe, grader)
    metrics = {k: v for k, v in metrics.items() if np.isfinite(v)}  # absent = undefined this step
    step.metrics = metrics
    state.step = step.number
    best = metrics.get(cfg.validation.metric)
    if run.validation is not None and selectable(cfg, step.number) and _is_best(best, state.best_metric):
        state.best_metric, state.best_step = metrics[cfg.validation.metric], step.number
        with run.phases.phase("checkpoint", step_metric=False):
            save_checkpoint(run.best_dir, run.learner, run.tokenizer, state, dtype=hf_dtype(cfg), resumable=False)
    disjoint = metrics.get(cfg.validation.selection_metric)
    if run.selection is not None and selectable(cfg, step.number) and _is_best(disjoint, state.best_disjoint_metric):
        state.best_disjoint_metric, state.best_disjoint_step = disjoint, step.number
        with run.phases.phase("checkpoint", step_metric=False):
            save_checkpoint(
                run.best_disjoint_dir, run.learner, run.tokenizer, state, dtype=hf_dtype(cfg), resumable=False
            )
    if run.main:
        record(run, step.number, metrics)
        if cfg.log_rollouts_every and step.number % cfg.log_rollouts_every == 0:
            dump_rollouts(run.out / "rollouts" / f"step_{step.number:06d}.jsonl", run.problems, step)


def record(run: Run, number: int, metrics: dict[str, float]) -> None:
    """One line of metrics.jsonl and its MLflow mirror (the main process)."""
    if run.main:
        files.append_jsonl(run.out / "metrics.jsonl", {"step": number, **metrics})
        run.tracker.log_metrics(metrics, step=number)


def _is_best(value: float | None, best: float | None) -> bool:
    return value is not None and np.isfinite(value) and (best is None or value > best)


# ---------------------------------------------------------------------------------------------- checkpoint, finish
def checkpoint(run: Run, step: Step, *, now: bool = False) -> None:
    """Every ``save_every`` steps, at the last one, and ``now`` (a preemption)."""
    if now or step.number % run.cfg.save_every == 0 or step.number == run.cfg.steps:
        with run.phases.phase("checkpoint", step_metric=False):
            save_checkpoint(
                run.last_dir, run.learner, run.tokenizer, run.state, dtype=hf_dtype(run.cfg), resumable=True
            )


def finish(run: Run, final: dict[str, float]) -> dict[str, Any]:
    """The summary (``train.done``, written last: Snakemake's target) and the runs table's headline metrics;
    ``final``: the last step's metrics (empty when a finished run is resumed)."""
    summary = {
        "param_checksums": param_checksums(run.model, run.accelerator),
        "method": run.preset.name,
        "seed": run.cfg.seed,
        "steps": run.cfg.steps,
        "mlflow_run_id": run.tracker.run_id,
        "best_step": run.state.best_step,
        "best_metric": run.state.best_metric,
        "best_disjoint_step": run.state.best_disjoint_step,
        "best_disjoint_metric": run.state.best_disjoint_metric,
        "final": final,
        "startup": run.startup,
        "phases": run.phases.summary(),  # this process's (the main one's, in train.done)
    }
    run.tracker.log_metrics(headline_metrics(summary), step=run.state.step)  # the runs table's columns
    summary["tracking_s"] = round(run.tracker.seconds, 3)  # this process's time in MLflow calls (a slow server)
    if run.tracker.error:  # the files are complete; `steer-bench report` re-mirrors them into MLflow
        summary["tracking_error"] = run.tracker.error
        log.warning("%s: finished, but MLflow mirroring failed: %s", run.out, run.tracker.error)
    if run.main:
        files.write_json(run.out / "train.done", summary)
    return summary

"""The set-up phase: checks that need the method, the model and the launch; seeding; the prompt order; the
model, optimizer and scheduler prepared for the launch; the rollout engine; MLflow. Everything a run holds
across steps is one :class:`Run`."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator

from steer_bench import files
from steer_bench.algos import Method
from steer_bench.config import dump_yaml
from steer_bench.config.method import MethodConfig
from steer_bench.config.run import TrainConfig
from steer_bench.data import load_prepared
from steer_bench.errors import SteerBenchError
from steer_bench.inputs import check_same_architecture
from steer_bench.rollout import RolloutEngine, make_engine
from steer_bench.rollout.model import fit_prompts, load_policy
from steer_bench.rollout.vllm import VLLMEngine, launch_backend
from steer_bench.tracking import Tracker, env_info, resolve_uri, train_run_tags
from steer_bench.train.checkpoint import (
    TrainState,
    is_resumable,
    load_trainer_state,
    log_save_budget,
    truncate_metrics,
)
from steer_bench.train.distributed import ensure_process_group, make_accelerator, prepare, shard_fsdp2
from steer_bench.train.heldout import HeldOut, hold_out, load_validation
from steer_bench.train.phases import PhaseMeter
from steer_bench.train.update import Learner


def check_run(cfg: TrainConfig, method: MethodConfig, context_len: int | None, world_size: int) -> None:
    """Checks that need the method, the model and the launch: fail before any compute, naming the culprit."""
    if method.resolve().needs.groups and cfg.rollout.n < 2:
        raise SteerBenchError(
            f"method {method.name!r} compares responses within a group: rollout.n must be ≥ 2, got {cfg.rollout.n}"
        )
    if context_len is not None and cfg.max_prompt_len + cfg.rollout.max_new_tokens > context_len:
        raise SteerBenchError(
            f"max_prompt_len ({cfg.max_prompt_len}) + rollout.max_new_tokens ({cfg.rollout.max_new_tokens}) "
            f"exceeds the context of {cfg.model.path} ({context_len} tokens)"
        )
    cfg.check_world(world_size)
    if cfg.rollout.engine == "vllm":  # an engine that cannot start in this world fails before the model is prepared
        launch_backend(world_size, cfg.rollout.vllm.tensor_parallel_size)


def step_seed(seed: int, step: int) -> int:
    """The seed of every random draw in one step: a pure function of (seed, step), so resume replays exactly."""
    return (seed * 1_000_003 + step * 7_919) % (2**31 - 1)


def rollout_seed(seed: int, step: int, rank: int, prompts_per_rank: int, n: int) -> int:
    """The seed of rank ``rank``'s first sequence at ``step``: the engines give sequence j of the call's prompt i
    ``seed + i·n + j`` (:class:`~steer_bench.rollout.SamplingParams`), so the ranks' calls cover disjoint ranges and
    every sequence of the step has its own random stream."""
    return step_seed(seed, step) + rank * prompts_per_rank * n


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


def start_engine(cfg: TrainConfig, model: Any, tokenizer: Any, model_path: str) -> RolloutEngine:
    """The rollout engine: vLLM starts from the weights on disk (the trainer's model equals them) with the knobs
    of ``rollout.vllm``; hf samples from the model object itself."""
    if cfg.rollout.engine == "hf":
        return make_engine("hf", model, tokenizer)
    longest = cfg.max_prompt_len + cfg.rollout.max_new_tokens
    return make_engine(
        "vllm", model, tokenizer, vllm=cfg.rollout.vllm, model_path=model_path, seed=cfg.seed, max_model_len=longest
    )


@dataclass
class Run:
    """What one training run holds across its steps."""

    cfg: TrainConfig
    preset: MethodConfig
    method: Method
    out: Path
    accelerator: Accelerator
    model: Any  # the prepared policy (a transformers model, DDP- or FSDP2-wrapped by the launch)
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any  # transformers' LambdaLR schedule
    engine: RolloutEngine
    tracker: Tracker
    state: TrainState
    problems: pd.DataFrame  # the prepared training problems, after dropping over-long prompts
    prompts: list[list[int]]
    dropped: list[str]  # problem ids of the over-long prompts left out (on_long_prompt: drop)
    validation: HeldOut | None  # (prompt ids, golds) of the held-out set
    selection: HeldOut | None  # the same of the disjoint selection set (validation.selection_data)
    startup: dict[str, float]  # model_load_s, then first_rollout_unix (time.time() as the first rollout starts)
    phases: PhaseMeter  # wall time and peak memory per phase (steer_bench.train.phases)

    @property
    def learner(self) -> Learner:
        """What the update phase moves: the model, its optimizer and schedule, and the launch."""
        return Learner(self.model, self.optimizer, self.scheduler, self.accelerator)

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def last_dir(self) -> Path:
        return self.out / "checkpoints" / "last"

    @property
    def best_dir(self) -> Path:
        return self.out / "checkpoints" / "best"

    @property
    def best_disjoint_dir(self) -> Path:
        return self.out / "checkpoints" / "best_disjoint"

    @property
    def name(self) -> str:
        return f"{self.preset.name}-seed{self.cfg.seed}"


def set_up(cfg: TrainConfig, preset: MethodConfig, out: Path) -> Run:
    """Resume or start: model, data, optimizer and scheduler, trainer state, resolved configs, MLflow, engine."""
    accelerator = make_accelerator(cfg)
    main = accelerator.is_main_process
    last_dir, best_dir = out / "checkpoints" / "last", out / "checkpoints" / "best"
    if main:  # a run killed while saving: put the complete previous checkpoint back
        files.recover_atomic_dir(last_dir)
        files.recover_atomic_dir(best_dir)
        files.recover_atomic_dir(out / "checkpoints" / "best_disjoint")
    accelerator.wait_for_everyone()
    resume = is_resumable(last_dir)
    if resume:
        check_same_architecture(last_dir, cfg.model.path)

    seed_everything(cfg.seed)
    phases = PhaseMeter()
    t_load = time.perf_counter()
    with phases.phase("load", step_metric=False):
        policy = load_policy(cfg.model, path=str(last_dir) if resume else None)
    startup = {"model_load_s": time.perf_counter() - t_load}
    model, tokenizer = policy.model, policy.tokenizer
    check_run(cfg, preset, policy.context_len, accelerator.num_processes)
    problems = load_prepared(cfg.data.train)
    problems = problems.head(cfg.data.limit) if cfg.data.limit else problems
    problems, held = hold_out(cfg, problems)  # before fitting: prompts[i] must stay problems' row i
    problems, prompts, dropped = fit_prompts(
        tokenizer, problems, max_len=cfg.max_prompt_len, source=cfg.data.train, on_long=cfg.on_long_prompt
    )
    validation = load_validation(cfg, tokenizer)
    selection = load_validation(cfg, tokenizer, selection=True, held=held)

    log_save_budget(cfg, sum(p.numel() for p in model.parameters()), accelerator.num_processes)
    if cfg.shard == "fsdp2":  # before the optimizer: it must see the sharded parameters
        ensure_process_group(accelerator, cfg.collective_timeout_s)
        model = shard_fsdp2(model, accelerator, mixed_precision=cfg.mixed_precision, replicas=cfg.hsdp_replicas)
    optimizer, scheduler = make_optimizer(model, cfg)
    model, optimizer, scheduler = prepare(accelerator, model, optimizer, scheduler, shard=cfg.shard)
    state = TrainState()
    if resume:
        with phases.phase("resume", step_metric=False):
            state = load_trainer_state(last_dir, accelerator, model, optimizer, scheduler)
    if resume:
        truncate_metrics(out / "metrics.jsonl", state.step)
    env = env_info()
    if main:
        files.write_text(out / "config.yaml", dump_yaml(cfg))
        files.write_text(out / "method.yaml", dump_yaml(preset))
        files.write_json(out / "env.json", env)
    tracker = Tracker(
        cfg.experiment,
        run_name=f"{preset.name}-seed{cfg.seed}",
        run_id=state.mlflow_run_id,
        enabled=main and cfg.track,
        uri=resolve_uri(cfg.tracking_db) if main and cfg.track else None,
        tags=train_run_tags(preset.name, cfg.seed, out),
    )
    state.mlflow_run_id = tracker.run_id
    tracker.log_params({"config": cfg.model_dump(mode="json"), "method": preset.model_dump(mode="json"), "env": env})
    with phases.phase("engine_start", step_metric=False):
        weights = str(last_dir) if resume else cfg.model.path
        engine = start_engine(cfg, accelerator.unwrap_model(model), tokenizer, weights)
    if isinstance(engine, VLLMEngine):  # what a wave of decoding holds (steer-bench preflight extrapolates with it)
        startup["engine_full_length_seqs"] = engine.concurrency(cfg.max_prompt_len + cfg.rollout.max_new_tokens)
    return Run(
        cfg=cfg,
        preset=preset,
        method=preset.resolve(),
        out=out,
        accelerator=accelerator,
        model=model,
        tokenizer=tokenizer,
        optimizer=optimizer,
        scheduler=scheduler,
        engine=engine,
        tracker=tracker,
        state=state,
        problems=problems,
        prompts=prompts,
        dropped=dropped,
        validation=validation,
        selection=selection,
        startup=startup,
        phases=phases,
    )

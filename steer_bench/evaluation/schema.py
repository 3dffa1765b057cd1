"""The experiment's ``eval:`` section: how the benchmarks are evaluated (engine, checkpoint, grading, memory)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from steer_bench.config import StrictModel
from steer_bench.config.run import VllmConfig


class EvalSection(StrictModel):
    protocol: str | dict[str, Any] = "paper"
    """A protocol name (configs/protocols: paper, greedy), a YAML path, or a full protocol mapping
    (see steer_bench.evaluation.protocol)."""
    engine: Literal["vllm", "hf"] = "vllm"
    checkpoint: Literal["best", "last"] = "best"
    """Which checkpoint of a trained run to evaluate: best (by validation.metric) or last. This is the main table's
    view, evaluated into ``eval/<method>/seed<k>/``."""
    selection_views: bool = False
    """Also evaluate the other checkpoint-selection views of every trained run, each into
    ``eval/<method>/seed<k>/<view>/``: ``best`` (selected on ``data.validation``) and ``last`` (whichever is not the
    main view) and, with ``data.selection``, ``best_disjoint`` (selected on that disjoint set). The report's
    "Checkpoint selection" section compares them; the main table is unchanged."""
    workers: int = Field(2, ge=1)
    timeout_s: float = Field(10.0, gt=0)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """auto: float32 on CPU; on GPU bfloat16 (hf) or the checkpoint's dtype (vllm)."""
    batch_size: int = Field(64, ge=1)
    """hf engine: prompts per generate call."""
    vllm: VllmConfig = VllmConfig(gpu_memory_utilization=0.9)
    """Tensor parallelism and memory of the vLLM engine (eval has the GPU to itself)."""
    jobs: Literal["per_run", "one"] = "per_run"
    """per_run: one Snakemake job per trained run (a cluster evaluates them in parallel); one: a single job
    evaluates every trained run with one engine that loads each checkpoint's weights in turn
    (``steer-bench eval --all``), for the CPU miniature, where vLLM's start-up would dominate."""

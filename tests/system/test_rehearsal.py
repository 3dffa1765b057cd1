"""The dress rehearsal of the paper pipeline (configs/paper/rehearsal.yaml), trimmed to stay short: the real
`snakemake` on a config that extends it and only cuts the scale further (one method, 2 steps, 2 problems per
benchmark, a 30-step warm start). Every paper-scale path a CPU runs: the six release benchmark files, 2
training ranks under `accelerate launch` sharded with FSDP2, one vLLM engine over both (tensor parallel 2; sync
self-check at 1e-5), AIME24 validation selecting the best checkpoint, sharded checkpoints, vLLM evaluation with
the paper protocol, MLflow, and the report with the paper's Table 3 beside ours."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from rehearsal import (
    BENCHMARKS,
    REHEARSAL,
    REPO,
    SNAKEMAKE,
    check_evaluation_and_report,
    check_preflight,
    check_training,
    logs_tail,
    slurm_cluster_up,
    snakemake_env,
    trimmed_config,
)

from steer_bench.experiment import load_experiment

pytest.importorskip("vllm")


def test_rehearsal_changes_only_the_scale() -> None:
    recipe = load_experiment(REPO / "configs" / "paper" / "table3_7b.yaml")
    ours = load_experiment(REHEARSAL)
    assert ours.data.benchmarks == recipe.data.benchmarks == BENCHMARKS
    assert (ours.data.train, ours.data.validation, ours.data.template) == ("dapo_math_17k", "aime24", "paper")
    a, b = recipe.train_config(0), ours.train_config(0)
    assert a.reward == b.reward.model_copy(update={"workers": a.reward.workers})  # strict grader, +1/−1
    assert a.optim == b.optim
    assert (b.rollout.engine, b.rollout.n, b.rollout.temperature, b.rollout.top_p) == ("vllm", 8, 1.0, 1.0)
    assert (b.max_prompt_len, b.micro_batch_size, b.validation.top_p) == (1024, 8, 0.7)
    assert (ours.eval.engine, ours.eval.checkpoint, ours.reference) == ("vllm", "best", "table3_7b")
    assert ours.accelerate_config == "configs/accelerate/cpu_2ranks.yaml"
    # the same sharding and precision code as the GPU recipe: FSDP2 by the trainer, bf16 policy, no autocast
    assert (a.shard, a.mixed_precision) == (b.shard, b.mixed_precision) == ("fsdp2", "bf16")
    assert a.remove_padding is b.remove_padding is True  # packed micro-batches, as the release (docs/packing.md)
    # the release's engine layout, tensor parallel 4 on 8 ranks, scaled to the 2 ranks: one engine over both
    assert (a.rollout.vllm.tensor_parallel_size, b.rollout.vllm.tensor_parallel_size) == (4, 2)


@pytest.mark.slow
@pytest.mark.vllm
# The same rehearsal runs through SLURM in tests/system/test_slurm.py wherever the local cluster is up (always in CI):
# running both would cost CI the rehearsal twice.
@pytest.mark.skipif(
    slurm_cluster_up(), reason="tests/system/test_slurm.py runs this rehearsal through the local SLURM"
)
def test_trimmed_rehearsal_end_to_end(tmp_path: Path) -> None:
    config = trimmed_config(tmp_path, "rehearsal_ci")
    cmd = [*SNAKEMAKE, "--directory", str(tmp_path), "--cores", "2", "--configfile", str(config)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=900, env=snakemake_env(tmp_path))
    root = tmp_path / "results" / "rehearsal_ci"
    assert run.returncode == 0, run.stderr[-3000:] + logs_tail(root)
    check_preflight(root, ranks=2)
    check_training(root / "runs" / "steer" / "seed0", ranks=2)
    check_evaluation_and_report(root, "steer")

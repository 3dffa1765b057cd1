"""The SLURM path (profiles/slurm, the snakemake-executor-plugin-slurm) for real.

- The submission of the paper recipe's train job, built by the installed plugin from the resources Snakemake
  resolves with the profile: one task holding its node's 8 GPUs (no ``--ntasks-per-gpu``, which made the job ask
  for 8 × 64 CPUs), and the job step's ``srun`` passing all of them on; for 2 nodes, one task per node.
- A real cluster on this host (scripts/slurm_local.sh: munge, slurmctld, two slurmd of 64 CPUs and 8 placeholder
  GPUs each; `.ci/run` starts it, and under CI=true its absence is a failure): the trimmed paper rehearsal through
  ``--workflow-profile profiles/slurm`` — sbatch, the job step, `accelerate launch` of 2 CPU ranks inside the
  8-GPU train job, evaluation, report — then a training run over both nodes (one launcher per node, rendezvous
  from SLURM's environment). The jobs' states are read back from SLURM (squeue: the cluster has no accounting
  database, so the plugin polls with ``--slurm-status-command squeue``).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from rehearsal import (
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

CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}
PROFILE = REPO / "profiles" / "slurm"
pytestmark = pytest.mark.slow  # the real snakemake and its SLURM plugin


def require_plugin() -> None:
    """The slurm extra: a failure under CI (scripts/setup.sh installs it), a skip elsewhere."""
    try:
        import snakemake_executor_plugin_slurm  # noqa: F401
    except ImportError as e:
        if CI:
            pytest.fail(f"CI=true but the slurm extra is not installed ({e}): run scripts/setup.sh")
        pytest.skip(f"the slurm extra is not installed ({e})")


class Resources(dict):
    """A job's resources as the plugin reads them (``job.resources.gpu`` and ``job.resources.get("gpu")``)."""

    def __getattr__(self, name: str) -> Any:
        return self[name]


def dry_run_job(workdir: Path, config: Path, target: str) -> tuple[SimpleNamespace, str]:
    """The train job of ``target`` as Snakemake resolves it under the SLURM profile: (a job for the plugin's
    functions, its shell command)."""
    cmd = [*SNAKEMAKE, "--directory", str(workdir), target, "-n", "-p", "--workflow-profile", str(PROFILE),
           "--configfile", str(config)]  # fmt: skip
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=snakemake_env(workdir))
    assert run.returncode == 0, run.stderr[-3000:]
    block = (run.stdout + run.stderr).split("rule train:", 1)[1].split("\n\n", 1)[0]
    resources: dict[str, Any] = {}
    for item in re.search(r"resources: (.*)", block).group(1).split(", "):  # type: ignore[union-attr]
        key, value = item.split("=", 1)
        resources[key] = int(value) if value.isdigit() else value
    threads = re.search(r"threads: (\d+)", block)
    job = SimpleNamespace(resources=Resources(resources), threads=int(threads.group(1)) if threads else 1)
    shell = re.search(r"Shell command: (.*)", block).group(1)  # type: ignore[union-attr]
    return job, shell


@pytest.mark.parametrize("nodes", [1, 2])
def test_the_recipe_train_job_asks_for_what_a_node_has(tmp_path: Path, nodes: int) -> None:
    require_plugin()
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm_jobstep import get_gpu_setting

    (tmp_path / "configs").symlink_to(REPO / "configs")
    config = tmp_path / "recipe.yaml"
    recipe = {"extends": str(REPO / "configs" / "paper" / "table3_7b.yaml")}
    config.write_text(yaml.safe_dump(recipe | ({"resources": {"train_nodes": nodes}} if nodes > 1 else {})))
    job, shell = dry_run_job(tmp_path, config, "results/table3_7b/runs/steer/seed0/train.done")
    params = {"run_uuid": "uuid", "slurm_logfile": "log", "comment_str": "rule_train", "account": "",
              "partition": "", "workdir": str(tmp_path)}  # fmt: skip
    sbatch = get_submit_command(job, params) + set_gres_string(job)
    assert "--ntasks-per-gpu" not in sbatch, sbatch  # the old profile: 8 tasks × 64 CPUs, refused by SLURM
    assert "--cpus-per-task=64" in sbatch
    assert f"--gpus={8 * nodes}" in sbatch
    assert f" --gpus {8 * nodes} train --method steer --seed 0" in shell  # through `steer-bench launch`
    if nodes == 1:
        assert not re.search(r"--ntasks|--nodes", sbatch)  # one task (SLURM's default)
        assert get_gpu_setting(job) == "--gpus=8"  # the job step's `srun -n1` passes every GPU to the launcher
    else:
        assert "--nodes=2" in sbatch
        assert "--ntasks=2" in sbatch  # one task per node: each runs one launcher
        assert job.resources["mpi"] == "srun"  # the plugin leaves the srun to `steer-bench launch`


# ---- the cluster --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The local cluster of scripts/slurm_local.sh. Under CI (as root) the script runs again here: it must be a
    quick no-op when `.ci/run` already started it; its absence is then a failure."""
    require_plugin()
    if CI and os.geteuid() == 0:
        run = subprocess.run(["bash", str(REPO / "scripts" / "slurm_local.sh")], capture_output=True, text=True,
                             timeout=600)  # fmt: skip
        assert run.returncode == 0, run.stderr
    if not slurm_cluster_up():
        message = "no local SLURM cluster (nodes n1, n2): run `sudo bash scripts/slurm_local.sh`"
        if CI:
            pytest.fail(f"CI=true but {message}")
        pytest.skip(message)


def slurm_jobs(workdir: Path) -> list[dict[str, str]]:
    """The SLURM jobs submitted from ``workdir``, as squeue lists them (finished ones stay for MinJobAge)."""
    fields = ["JobID", "State", "Comment", "NumCPUs", "NumNodes", "NodeList", "tres-per-job", "WorkDir"]
    out = subprocess.run(["squeue", "--states=all", "-h", "-O", ",".join(f"{f}:|" for f in fields)],
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    rows = [dict(zip(fields, line.split("|"), strict=False)) for line in out.splitlines()]
    return [r for r in rows if r["WorkDir"] == str(workdir)]


def run_with_profile(workdir: Path, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*SNAKEMAKE, "--directory", str(workdir), *args, "--workflow-profile", str(PROFILE),
           "--configfile", str(config), "--slurm-status-command", "squeue",
           "--slurm-init-seconds-before-status-checks", "2", "--retries", "0", "--jobs", "4"]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1500, env=snakemake_env(workdir))


@pytest.mark.vllm
def test_rehearsal_through_slurm_then_training_over_two_nodes(tmp_path: Path, slurm_cluster: None) -> None:
    pytest.importorskip("vllm")
    # the recipe's shape on the placeholder GPUs: an 8-GPU train job, 1-GPU evaluation (the ranks run on CPU)
    config = trimmed_config(tmp_path, "rehearsal_slurm", resources={"train_gpus": 8, "eval_gpus": 1})
    run = run_with_profile(tmp_path, config)
    root = tmp_path / "results" / "rehearsal_slurm"
    assert run.returncode == 0, run.stderr[-4000:] + logs_tail(root)
    check_preflight(root, ranks=2)
    check_training(root / "runs" / "steer" / "seed0", ranks=2)
    check_evaluation_and_report(root, "steer")
    jobs = {j["Comment"]: j for j in slurm_jobs(tmp_path)}
    datasets = ["dapo_math_17k", "aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"]
    assert set(jobs) == {*(f"rule_prepare_wildcards_{d}" for d in datasets), "rule_warmstart", "rule_preflight",
                         "rule_train_wildcards_steer_0", "rule_eval_run_wildcards_steer_0"}  # fmt: skip
    assert jobs["rule_preflight"]["tres-per-job"] == "gres:gpu:8"  # launched as the train job it measures
    assert {j["State"] for j in jobs.values()} == {"COMPLETED"}
    train = jobs["rule_train_wildcards_steer_0"]
    assert (train["NumNodes"], train["NumCPUs"], train["tres-per-job"]) == ("1", "64", "gres:gpu:8")
    assert jobs["rule_eval_run_wildcards_steer_0"]["tres-per-job"] == "gres:gpu:1"
    log = (root / "logs" / "train" / "steer-seed0.log").read_text()
    assert "launch: one node; CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7; exec " in log  # the launcher sees all 8

    # Two nodes: one rank per node (TP-1 engines, each inside its node), the data and warm start of the run above.
    per_node = tmp_path / "cpu_1rank.yaml"
    per_node.write_text(yaml.safe_dump({"distributed_type": "MULTI_GPU", "use_cpu": True, "mixed_precision": "no",
                                        "num_machines": 1, "num_processes": 1}))  # fmt: skip
    nodes2 = tmp_path / "nodes2.yaml"
    nodes2.write_text(yaml.safe_dump({"extends": str(config), "methods": ["grpo"], "accelerate_config": str(per_node),
                                      "resources": {"train_nodes": 2},
                                      "train": {"rollout": {"vllm": {"tensor_parallel_size": 1}}}}))  # fmt: skip
    target = "results/rehearsal_slurm/runs/grpo/seed0/train.done"
    run = run_with_profile(tmp_path, nodes2, target, "--rerun-triggers", "mtime")
    assert run.returncode == 0, run.stderr[-4000:] + logs_tail(root)
    check_training(root / "runs" / "grpo" / "seed0", ranks=2)
    train = next(j for j in slurm_jobs(tmp_path) if j["Comment"] == "rule_train_wildcards_grpo_0")
    assert (train["State"], train["NumNodes"], train["NodeList"]) == ("COMPLETED", "2", "n[1-2]")
    assert (train["NumCPUs"], train["tres-per-job"]) == ("128", "gres:gpu:16")
    log = (root / "logs" / "train" / "grpo-seed0.log").read_text()
    for rank in (0, 1):  # srun --label: each node's task logged its launcher, both meeting at node n1's address
        line = (rf"^{rank}: .*launch: node {rank} of 2, master 127\.0\.0\.1:\d+; "
                rf"CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7; exec .*--machine_rank {rank} --num_processes 2")  # fmt: skip
        assert re.search(line, log, re.M), log[-3000:]

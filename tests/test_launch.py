"""`steer-bench launch` without a cluster: local GPU slots on a faked device list (concurrent jobs get disjoint
devices, a killed job frees its own, a busy machine fails naming the holders), the launcher lines of one and of
several nodes, the rules' resources, and the launch checks at config load (the world of several nodes, engines
inside a node)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from steer_bench.errors import SteerBenchError
from steer_bench.experiment import load_experiment
from steer_bench.launch import Rendezvous, launcher_argv, rule_resources

REPO = Path(__file__).resolve().parents[1]
# A job as `steer-bench launch` runs one: take free devices, exec the job with them; the job prints its devices and
# holds them until its stdin closes.
JOB = """
import os, sys
from steer_bench.launch import acquire_devices, exec_job, lock_dir, machine_devices
devices, fds = acquire_devices(int(sys.argv[1]), machine_devices(), lock_dir(), wait_s=float(sys.argv[2]),
                               holder=f"pid {os.getpid()}: test job")
job = "import os, sys; print(os.environ['CUDA_VISIBLE_DEVICES'], flush=True); sys.stdin.read()"
exec_job([sys.executable, "-c", job], {**os.environ, "CUDA_VISIBLE_DEVICES": ",".join(devices)}, fds)
"""


@pytest.fixture
def machine(tmp_path: Path) -> dict[str, str]:
    """A faked 4-GPU machine (device ids 0-3) with its own lock folder."""
    return {**os.environ, "STEER_BENCH_DEVICES": "0,1,2,3", "STEER_BENCH_GPU_LOCKS": str(tmp_path / "locks"),
            "PYTHONPATH": str(REPO)}  # fmt: skip


def start(env: dict[str, str], gpus: int, wait_s: float = 0) -> tuple[subprocess.Popen[str], list[str]]:
    """Start a job asking for ``gpus`` devices; (the process, the devices it runs on)."""
    proc = subprocess.Popen([sys.executable, "-c", JOB, str(gpus), str(wait_s)], env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, proc.communicate()[1]
    return proc, line.split(",")


def finish(proc: subprocess.Popen[str]) -> None:
    proc.communicate(input="", timeout=30)
    assert proc.returncode == 0


def test_concurrent_jobs_get_disjoint_devices_and_a_full_machine_names_the_holders(machine: dict[str, str]) -> None:
    (a, on_a), (b, on_b), (c, on_c) = start(machine, 2), start(machine, 1), start(machine, 1)
    assert len(on_a) == 2
    assert sorted(on_a + on_b + on_c) == ["0", "1", "2", "3"]  # every device once: no two jobs share one
    busy = subprocess.run([sys.executable, "-c", JOB, "1", "0"], env=machine, capture_output=True, text=True,
                          timeout=60)  # fmt: skip
    assert busy.returncode != 0
    assert "asks for 1 GPUs but only 0 of 4 were free" in busy.stderr
    assert f"pid {a.pid}: test job" in busy.stderr  # the holder of each device, by pid (exec keeps it)
    finish(b)
    d, on_d = start(machine, 1)  # the device b held is free again
    assert on_d == on_b
    for proc in (a, c, d):
        finish(proc)


def test_a_killed_job_frees_its_devices_and_a_waiting_job_takes_them(machine: dict[str, str]) -> None:
    crashed, on_crashed = start(machine, 3)
    waiting = subprocess.Popen([sys.executable, "-c", JOB, "2", "60"], env=machine, text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    crashed.send_signal(signal.SIGKILL)  # no clean-up runs: the kernel drops the dead process's locks
    crashed.wait(timeout=30)
    assert waiting.stdout is not None
    on_waiting = waiting.stdout.readline().strip().split(",")
    assert len(on_waiting) == 2
    assert set(on_waiting) <= {"0", "1", "2", "3"}
    assert len(on_crashed) == 3
    finish(waiting)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        # SLURM may number every job's GPUs from 0: device 0 of job 7 and device 0 of job 8 are different cards
        ({"SLURM_JOB_ID": "7"}, {"SLURM_JOB_ID": "8"}),
        # the node tasks of one job, on two nodes sharing the lock folder (or one host, as the CI cluster)
        ({"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n1"}, {"SLURM_JOB_ID": "7", "SLURMD_NODENAME": "n2"}),
    ],
)
def test_each_slurm_job_and_node_locks_its_own_devices(machine: dict[str, str], one: dict, other: dict) -> None:
    (a, on_a), (b, on_b) = start(machine | one, 4), start(machine | other, 4)
    assert on_a == on_b == ["0", "1", "2", "3"]
    for proc in (a, b):
        finish(proc)


@pytest.mark.slow
def test_launch_cli_takes_local_gpus_and_refuses_what_the_machine_lacks(machine: dict[str, str]) -> None:
    cmd = [sys.executable, "-m", "steer_bench", "launch", "--config", str(REPO / "configs" / "smoke.yaml")]
    # the eval stage then fails on its own (no such row): what matters is what launch gave it
    ran = subprocess.run([*cmd, "--gpus", "2", "eval", "--row", "no_such_row"], env=machine, capture_output=True,
                         text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert "CUDA_VISIBLE_DEVICES=0,1; exec " in ran.stderr, ran.stderr[-2000:]
    assert "no_such_row" in ran.stderr
    more = subprocess.run([*cmd, "--gpus", "5", "eval", "--row", "base"], env=machine, capture_output=True,
                          text=True, timeout=120, cwd=REPO)  # fmt: skip
    assert more.returncode == 2
    assert "the job asks for 5 GPUs but this machine has 4 (0, 1, 2, 3)" in more.stderr


def test_launcher_lines_of_one_node_and_of_several() -> None:
    cpu2 = "configs/accelerate/cpu_2ranks.yaml"
    one = launcher_argv(["train", "--method", "grpo"], cpu2, port=31000)
    assert one[1:] == ["-m", "accelerate.commands.launch", "--config_file", cpu2, "--main_process_port", "31000",
                       "-m", "steer_bench", "train", "--method", "grpo"]  # fmt: skip
    node1 = launcher_argv(["train"], cpu2, port=0, rdzv=Rendezvous(nodes=3, rank=1, addr="10.0.0.7", port=29999))
    flags = dict(zip(node1[5:15:2], node1[6:16:2], strict=True))
    assert flags == {"--num_machines": "3", "--machine_rank": "1", "--num_processes": "6",  # 2 ranks per node
                     "--main_process_ip": "10.0.0.7", "--main_process_port": "29999"}  # fmt: skip
    assert launcher_argv(["eval", "--all"], None, port=0)[1:] == ["-m", "steer_bench", "eval", "--all"]


def experiment(tmp_path: Path, per_node: int = 2, machines: int = 1, **changes: Any) -> Path:
    """The rehearsal with ``changes`` and an accelerate config of ``per_node`` CPU ranks on ``machines``."""
    launch = tmp_path / "launch.yaml"
    launch.write_text(yaml.safe_dump({"distributed_type": "MULTI_GPU", "use_cpu": True,
                                      "num_processes": per_node, "num_machines": machines}))  # fmt: skip
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump({"extends": str(REPO / "configs" / "paper" / "rehearsal.yaml"),
                                    "accelerate_config": str(launch), **changes}))  # fmt: skip
    return path


def test_rule_resources_of_one_node_and_of_two(tmp_path: Path) -> None:
    res = {"train_gpus": 8, "eval_gpus": 1, "train_minutes": 100}
    one = load_experiment(experiment(tmp_path, resources=res))
    assert rule_resources(one, "train") == {"gpu": 8, "tasks_per_gpu": 0, "mem_mb": 6000, "runtime": 100}
    assert rule_resources(one, "eval")["gpu"] == 1
    tp1 = {"rollout": {"vllm": {"tensor_parallel_size": 1}}}
    two = load_experiment(experiment(tmp_path, per_node=1, resources={**res, "train_nodes": 2}, train=tp1))
    assert rule_resources(two, "train") == {"gpu": 16, "tasks_per_gpu": 0, "mem_mb": 6000, "runtime": 100,
                                            "nodes": 2, "tasks": 2, "mpi": "srun"}  # fmt: skip
    assert "nodes" not in rule_resources(two, "eval")  # evaluation stays on one node


@pytest.mark.parametrize(
    ("per_node", "machines", "changes", "message"),
    [
        # TP 2 engines over 1 rank per node: the 2 ranks of an engine would be on 2 nodes
        (1, 1, {"resources": {"train_nodes": 2}}, r"tensor_parallel_size=2 would span nodes.*divide the 1 processes"),
        # 2 ranks × 3 nodes = 6 does not split prompts_per_step 4
        (
            2,
            1,
            {"resources": {"train_nodes": 3}},
            r"prompts_per_step \(4\) must be divisible by the 6 processes of "
            r".*launch.yaml × 3 nodes",
        ),
        (2, 2, {}, "num_machines must be 1 — an accelerate_config describes one node"),
    ],
)
def test_launch_checks_at_config_load(
    tmp_path: Path, per_node: int, machines: int, changes: dict, message: str
) -> None:
    with pytest.raises(SteerBenchError, match=message):
        load_experiment(experiment(tmp_path, per_node, machines, **changes))


@pytest.mark.slow
def test_nodes_need_an_accelerate_config_and_a_slurm_allocation(tmp_path: Path) -> None:
    lone = tmp_path / "lone.yaml"
    lone.write_text(yaml.safe_dump({"extends": str(REPO / "configs" / "smoke.yaml"), "resources": {"train_nodes": 2}}))
    with pytest.raises(SteerBenchError, match="train_nodes=2 needs an 'accelerate_config'"):
        load_experiment(lone)
    tp1 = {"rollout": {"vllm": {"tensor_parallel_size": 1}}}
    two = experiment(tmp_path, per_node=1, resources={"train_nodes": 2}, train=tp1)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")} | {"PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable,
        "-m",
        "steer_bench",
        "launch",
        "--config",
        str(two),
        "train",
        "--method",
        "grpo",
        "--seed",
        "0",
    ]
    ran = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, cwd=REPO)
    assert ran.returncode == 2
    assert "resources.train_nodes=2 needs a SLURM allocation of 2 nodes" in ran.stderr

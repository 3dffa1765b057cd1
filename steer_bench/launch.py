"""Where a job's processes run: GPU slots on one machine, nodes and rendezvous under SLURM, and the launcher line.

``steer-bench launch`` (:mod:`steer_bench.commands.launch`) is what the Snakefile's train and eval rules call; it
resolves three things, then replaces itself (``exec``) with the real command, so the job's processes are its own:

- **GPU slots**. Snakemake's local executor only *counts* the ``gpu`` resource, so two jobs that each ask for one
  GPU would both use cuda:0. A job asking for k GPUs takes k devices that no other job holds (an exclusive
  ``flock`` on one lock file per device, in :func:`lock_dir`) and runs with ``CUDA_VISIBLE_DEVICES`` set to them.
  The open lock files are inherited across ``exec`` by the launcher and its ranks, and the kernel drops a lock
  when the last process holding it exits: a finished or crashed job (even ``kill -9``) frees its devices, with no
  stale state to clean. The devices are ``$STEER_BENCH_DEVICES`` (comma-separated ids: tests fake a machine with
  it, or it reserves a subset), else ``$CUDA_VISIBLE_DEVICES``, else every CUDA device. Inside a SLURM job they
  are the job's (GRES sets ``CUDA_VISIBLE_DEVICES``) and so are the locks: a SLURM job submitted by the plugin
  takes all of its own, and jobs of a local ``snakemake`` inside one allocation share its devices without
  colliding.
- **Nodes** (``resources.train_nodes`` > 1, SLURM only). The rule's job holds N nodes; ``launch`` starts one task
  per node with ``srun`` (:func:`srun_argv`), and each task execs one launcher for its node with the rendezvous
  read from SLURM's environment (:func:`slurm_rendezvous`): the first host of ``SLURM_JOB_NODELIST`` (its
  ``NodeAddr``) is the master, ``SLURM_NODEID`` the machine rank.
- **The launcher**: ``accelerate launch`` with the experiment's ``accelerate_config`` (which describes one node:
  its ``num_processes`` are the ranks per node), or one plain process (:func:`launcher_argv`).
"""

from __future__ import annotations

import fcntl
import logging
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from steer_bench.config import read_yaml
from steer_bench.errors import SteerBenchError

if TYPE_CHECKING:
    from steer_bench.experiment import ExperimentConfig

log = logging.getLogger(__name__)
DEVICES_ENV = "STEER_BENCH_DEVICES"
LOCKS_ENV = "STEER_BENCH_GPU_LOCKS"


# ---- Snakemake resources ----------------------------------------------------------------------------------------
def rule_resources(exp: ExperimentConfig, stage: str) -> dict[str, Any]:
    """The Snakemake ``resources`` of the train or eval rules (the SLURM profile adds ``cpus_per_task``).

    ``tasks_per_gpu=0`` keeps the SLURM plugin from adding ``--ntasks-per-gpu=1``: that would make an 8-GPU job
    8 tasks × ``cpus_per_task`` (512 CPUs, refused) and bind one GPU per task, while the job is one launcher that
    needs every GPU of its node. ``gpu`` is the job's total (per node × nodes), as sbatch's ``--gpus``. A
    multi-node job is ``mpi``-style: the plugin then leaves the ``srun`` to the rule (``launch`` runs one task per
    node) and asks for ``--nodes=N --ntasks=N``.
    """
    res = exp.resources
    if stage == "train":
        gpus, mem_mb, minutes, nodes = res.train_gpus, res.train_mem_mb, res.train_minutes, res.train_nodes
    elif stage == "eval":
        gpus, mem_mb, minutes, nodes = res.eval_gpus, res.eval_mem_mb, res.eval_minutes, 1
    else:
        raise SteerBenchError(f"rule_resources: stage must be 'train' or 'eval', got {stage!r}")
    out: dict[str, Any] = {"gpu": gpus * nodes, "tasks_per_gpu": 0, "mem_mb": mem_mb, "runtime": minutes}
    if nodes > 1:
        out |= {"nodes": nodes, "tasks": nodes, "mpi": "srun"}
    return out


# ---- GPU slots ----------------------------------------------------------------------------------------------------
def machine_devices() -> list[str]:
    """The device ids a local job may take (see the module docstring for the order of sources)."""
    for var in (DEVICES_ENV, "CUDA_VISIBLE_DEVICES"):
        if var in os.environ:
            return [d.strip() for d in os.environ[var].split(",") if d.strip()]
    import torch  # only a GPU job that names no devices pays for the import

    return [str(i) for i in range(torch.cuda.device_count())]


def lock_dir() -> Path:
    """``$STEER_BENCH_GPU_LOCKS``, else a per-user folder in the temp dir (point users who share a machine's GPUs
    at one folder they can all write); below it, one folder per machine (the folder may be on a shared filesystem)
    and per SLURM job, whose device ids are its own (SLURM may number every job's GPUs from 0)."""
    base = Path(os.environ.get(LOCKS_ENV) or Path(tempfile.gettempdir()) / f"steer-bench-gpus-{os.getuid()}")
    machine = os.environ.get("SLURMD_NODENAME") or socket.gethostname()  # SLURM's name: several nodes on one host
    job = os.environ.get("SLURM_JOB_ID")
    path = base / machine / (f"slurm-{job}" if job else "local")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _lock_file(folder: Path, device: str) -> Path:
    return folder / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', device)}.lock"


def acquire_devices(
    count: int, devices: list[str], folder: Path, *, wait_s: float, holder: str
) -> tuple[list[str], list[int]]:
    """Lock ``count`` free devices of ``devices``: (their ids, the open lock files to keep until the job ends).

    A try that finds too few free devices releases the ones it got before waiting (two jobs each holding half of
    what they need would otherwise wait for each other forever); after ``wait_s`` it fails naming the holders.
    """
    if count > len(devices):
        raise SteerBenchError(
            f"the job asks for {count} GPUs but this machine has {len(devices)} ({', '.join(devices) or 'none'}); "
            f"set ${DEVICES_ENV} or CUDA_VISIBLE_DEVICES to the devices to use, or lower the job's gpu resource"
        )
    deadline = time.monotonic() + wait_s
    while True:
        got: list[tuple[str, int]] = []
        for device in devices:
            fd = os.open(_lock_file(folder, device), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            got.append((device, fd))
            if len(got) == count:
                break
        if len(got) == count:
            for _, fd in got:  # who holds the device, for the error message of a job that finds it busy
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{holder}\n".encode(), 0)
            return [d for d, _ in got], [fd for _, fd in got]
        for _, fd in got:
            os.close(fd)
        if time.monotonic() >= deadline:
            held = "; ".join(f"{d}: {_lock_file(folder, d).read_text().strip() or '?'}" for d in devices)
            raise SteerBenchError(
                f"the job asks for {count} GPUs but only {len(got)} of {len(devices)} were free after {wait_s:.0f} s "
                f"(holders: {held}; lock files in {folder})"
            )
        time.sleep(0.5)


# ---- nodes and rendezvous ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Rendezvous:
    """Where a node's launcher meets the others: ``nodes`` machines, this one ``rank``, the master at addr:port."""

    nodes: int
    rank: int
    addr: str
    port: int


def rendezvous_port(key: str) -> int:
    """A stable port in [20000, 40000) from ``key``, the same on every node of a job; jobs with different keys (the
    SLURM job id, the stage's arguments) rarely share it, so two launches on one machine do not both bind 29500."""
    return 20000 + zlib.crc32(key.encode()) % 20000


def _scontrol(*args: str) -> str:
    if shutil.which("scontrol") is None:
        raise SteerBenchError("a multi-node launch reads its nodes from SLURM, but `scontrol` is not on PATH")
    run = subprocess.run(["scontrol", *args], capture_output=True, text=True, check=False)
    if run.returncode != 0:
        raise SteerBenchError(f"`scontrol {' '.join(args)}` failed: {run.stderr.strip()}")
    return run.stdout


def node_address(host: str) -> str:
    """The address SLURM reaches ``host`` at (its ``NodeAddr``; on most clusters the host name itself)."""
    match = re.search(r"\bNodeAddr=(\S+)", _scontrol("show", "node", "-o", host))
    return match.group(1) if match else host


def slurm_rendezvous(nodes: int, key: str) -> Rendezvous:
    """The rendezvous of this node's task of an ``srun`` over the job's nodes (one task per node)."""
    env = os.environ
    missing = [v for v in ("SLURM_JOB_ID", "SLURM_NODEID", "SLURM_JOB_NODELIST") if v not in env]
    if missing:
        raise SteerBenchError(f"a node task of a multi-node launch runs under srun, but {', '.join(missing)} unset")
    hosts = _scontrol("show", "hostnames", env["SLURM_JOB_NODELIST"]).split()
    if len(hosts) != nodes:
        raise SteerBenchError(
            f"the experiment asks for {nodes} train nodes but SLURM job {env['SLURM_JOB_ID']} has {len(hosts)} "
            f"({' '.join(hosts)}): submit it with --nodes={nodes}"
        )
    port = rendezvous_port(f"{env['SLURM_JOB_ID']}/{key}")
    return Rendezvous(nodes=nodes, rank=int(env["SLURM_NODEID"]), addr=node_address(hosts[0]), port=port)


def srun_argv(nodes: int, node_task: list[str]) -> list[str]:
    """One task per node, each with the whole node (a step's default: every CPU and GPU the job holds there); if
    one node's launcher fails, the others are stopped rather than left waiting at the rendezvous."""
    one_task_per_node = [f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1"]
    return ["srun", *one_task_per_node, "--kill-on-bad-exit=1", "--label", *node_task]


# ---- the job ---------------------------------------------------------------------------------------------------
TRAINING_STAGES = ("train", "preflight")
"""Stages launched as a training job: the experiment's accelerate config, its nodes, its GPUs."""


@dataclass(frozen=True)
class Job:
    """A train or eval job as the rule asks for it."""

    stage: str
    """train, preflight (launched as train: same processes, nodes and devices) or eval."""
    argv: list[str]
    """``steer-bench`` arguments of the stage (``train --config … --method …``)."""
    gpus: int
    """GPUs the job holds, all nodes together (the rule's ``gpu`` resource)."""
    gpu_wait: float
    """Seconds to wait for free local GPUs."""
    again: list[str]
    """``steer-bench`` arguments of this launch on one node (what the ``srun`` over the nodes runs)."""


def launch(exp: ExperimentConfig, job: Job, *, node_task: bool) -> NoReturn:
    """Resolve the job's nodes, devices and rendezvous, then replace this process with its launcher."""
    trains = job.stage in TRAINING_STAGES
    nodes = exp.resources.train_nodes if trains else 1
    in_slurm = "SLURM_JOB_ID" in os.environ
    if nodes > 1 and not node_task:
        if not in_slurm:
            raise SteerBenchError(
                f"experiment {exp.name!r}: resources.train_nodes={nodes} needs a SLURM allocation of {nodes} nodes "
                "(snakemake --workflow-profile profiles/slurm, docs/clusters.md)"
            )
        exec_job(srun_argv(nodes, [sys.executable, "-m", "steer_bench", *job.again]), dict(os.environ), [])
    env = dict(os.environ)
    fds: list[int] = []
    if job.gpus:
        per_node = job.gpus // nodes
        if in_slurm:
            check_slurm_devices(per_node)
        holder = f"pid {os.getpid()}: steer-bench {shlex.join(job.argv)}"
        devices, fds = acquire_devices(per_node, machine_devices(), lock_dir(), wait_s=job.gpu_wait, holder=holder)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(devices)
    key = shlex.join(job.argv)
    rdzv = slurm_rendezvous(nodes, key) if nodes > 1 else None
    accelerate = exp.accelerate_config if trains else None
    argv = launcher_argv(job.argv, accelerate, port=rendezvous_port(key), rdzv=rdzv)
    where = f"node {rdzv.rank} of {rdzv.nodes}, master {rdzv.addr}:{rdzv.port}" if rdzv else "one node"
    shown = env.get("CUDA_VISIBLE_DEVICES", "(unset)")
    log.info("%s; CUDA_VISIBLE_DEVICES=%s; exec %s", where, shown, shlex.join(argv))
    exec_job(argv, env, fds)


def check_slurm_devices(per_node: int) -> None:
    """The allocation must show this task every GPU its node holds (a per-task GPU binding would show one)."""
    seen = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d]
    if len(seen) < per_node:
        raise SteerBenchError(
            f"the job holds {per_node} GPUs per node but SLURM shows this task {len(seen)} "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', '(unset)')}): the task must have its "
            "node's GPUs; the SLURM plugin binds them per task unless the rule sets tasks_per_gpu=0"
        )


# ---- the launcher -----------------------------------------------------------------------------------------------
def launcher_argv(
    inner: list[str], accelerate_config: str | None, *, port: int, rdzv: Rendezvous | None = None
) -> list[str]:
    """``accelerate launch`` of ``steer-bench <inner>`` with the node's config, or one plain process.

    The accelerate config describes one node; under ``rdzv`` its ranks per node are multiplied by the nodes and
    the machine rank and master come from the rendezvous."""
    if accelerate_config is None:
        return [sys.executable, "-m", "steer_bench", *inner]
    argv = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", accelerate_config]
    if rdzv is None:
        argv += ["--main_process_port", str(port)]
    else:
        per_node = int(read_yaml(accelerate_config).get("num_processes", 1))
        argv += ["--num_machines", str(rdzv.nodes), "--machine_rank", str(rdzv.rank)]
        argv += ["--num_processes", str(per_node * rdzv.nodes)]
        argv += ["--main_process_ip", rdzv.addr, "--main_process_port", str(rdzv.port)]
    return [*argv, "-m", "steer_bench", *inner]


def exec_job(argv: list[str], env: dict[str, str], keep_fds: list[int]) -> NoReturn:
    """Replace this process with ``argv``; ``keep_fds`` (the GPU locks) stay open in it and its children."""
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(argv[0], argv, env)

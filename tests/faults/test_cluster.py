"""Faults of a training job on the local SLURM cluster (scripts/slurm_local.sh), injected into real processes: one
run of 2 CPU ranks (``steer-bench launch`` → ``accelerate launch``) on the tiny model, its folder on a size-limited
filesystem (a tmpfs), submitted four times:

1. rank 1 SIGKILLs itself in step 2's update: the job ends at once, rank 1 and its phase named, no process left;
2. the next submission resumes after step 1; rank 1 SIGSTOPs itself in step 2's update: the watchdog ends the job
   within ``heartbeat_timeout_s``, naming rank 1 and its phase, and no process is left;
3. the next one resumes again; the filesystem is shrunk so that step 2's checkpoint does not fit beside step 1's:
   a named error on the ranks, step 1's checkpoint intact, no temporaries;
4. space is back and the run goes through Snakemake's SLURM profile, checkpointing only at its end; SLURM requeues
   the job mid-run (``scontrol requeue``: SIGTERM to every process, then a new start): the ranks checkpoint the
   step they were in, the requeued job resumes after it and the run ends with an uninterrupted run's metrics;
   Snakemake saw one job finish and has nothing left to do.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import yaml
from rehearsal import SNAKEMAKE, snakemake_env
from system.test_slurm import PROFILE, slurm_cluster, slurm_jobs  # noqa: F401 (slurm_cluster: the fixture)
from trainrun import deterministic, experiment_yaml
from transformers import AutoModelForCausalLM

from steer_bench.files import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[2]
SITE = Path(__file__).with_name("site")  # sitecustomize: arms $STEER_BENCH_FAULT in the ranks
STEPS = 5
TIMEOUT_S = 10  # train.heartbeat_timeout_s
ENDED = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


def _config(tmp: Path, model_dir: Path, data: dict[str, Path], **train: object) -> Path:
    """The run: 2 CPU ranks, 5 steps, a checkpoint every step, a 10 s heartbeat timeout; no GPUs asked for."""
    path = experiment_yaml(tmp, model_dir, data, name="cluster", steps=STEPS, save_every=1,
                           heartbeat_timeout_s=TIMEOUT_S, reward={"workers": 1}, **train)  # fmt: skip
    exp = yaml.safe_load(path.read_text())
    exp |= {"accelerate_config": str(REPO / "configs" / "accelerate" / "cpu_2ranks.yaml"),
            "resources": {"train_gpus": 0, "eval_gpus": 0, "train_mem_mb": 4000, "eval_mem_mb": 2000,
                          "train_minutes": 30, "eval_minutes": 30}}  # fmt: skip
    path.write_text(yaml.safe_dump(exp))
    return path


def _launch(config: Path) -> str:
    return f"{sys.executable} -m steer_bench launch --config {config} train --method grpo --seed 0"


@pytest.fixture(scope="module")
def reference(model_dir: Path, data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The same run, uninterrupted, launched the same way on this machine (no SLURM)."""
    tmp = tmp_path_factory.mktemp("reference")
    config = _config(tmp, model_dir, data)
    log = tmp / "reference.log"
    with log.open("w") as out:
        run = subprocess.run(_launch(config).split(), env=snakemake_env(tmp), stdout=out, stderr=out, timeout=600)
    assert run.returncode == 0, log.read_text()[-3000:]
    return deterministic(read_jsonl(tmp / "results" / "cluster" / "runs" / "grpo" / "seed0" / "metrics.jsonl"))


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """The run folder on its own tmpfs (64 MiB until a test shrinks it); unmounted whatever happens."""
    run = tmp_path / "results" / "cluster" / "runs" / "grpo" / "seed0"
    run.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(run)], check=True)
    try:
        yield run
    finally:
        subprocess.run(["umount", "-l", str(run)], check=True)


def _resize(mount: Path, size: int) -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(mount)], check=True)


# ---- SLURM jobs ---------------------------------------------------------------------------------------------------
def _state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "--states=all", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def _submit(workdir: Path, config: Path, log: Path, fault: str | None = None) -> str:
    """sbatch the train command the Snakefile's rule runs, with ``fault`` armed in its ranks."""
    env = snakemake_env(workdir) | {"PYTHONPATH": f"{SITE}{os.pathsep}{snakemake_env(workdir)['PYTHONPATH']}"}
    if fault:
        env["STEER_BENCH_FAULT"] = fault
    cmd = ["sbatch", "--parsable", "--chdir", str(workdir), "--output", f"{log}.slurm", "--cpus-per-task=4",
           "--job-name", "steer-bench-faults", "--wrap", f"{_launch(config)} > {log} 2>&1"]  # fmt: skip
    return subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.strip()


def _wait(job: str, timeout_s: float = 180) -> tuple[str, float]:
    """(final state, time.time() when the test first saw it); the job is cancelled if it outlives ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while (state := _state(job)) not in ENDED:
        if time.monotonic() > deadline:
            subprocess.run(["scancel", job], check=False)
            pytest.fail(f"SLURM job {job} still {state} after {timeout_s:.0f} s")
        time.sleep(0.25)
    return state, time.time()


def _job_processes(job: str) -> list[str]:
    """Processes with the job's id in their environment: what SLURM started and all its descendants, orphans too."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # it exited while we looked
            continue
        if f"SLURM_JOB_ID={job}".encode() in env:
            found.append(f"{proc.name}: {cmd[:200]}")
    return found


def _fault_time(log: str) -> float:
    return float(re.search(r"inject: \S+ to rank 1 in step 2, phase 'update', at ([\d.]+)", log).group(1))


def _intact_at_step_1(run: Path) -> None:
    last = run / "checkpoints" / "last"
    assert read_json(last / "state.json")["step"] == 1
    assert all(torch.isfinite(p).all() for p in AutoModelForCausalLM.from_pretrained(last).parameters())
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["last"]  # no temporaries
    assert not (run / "train.done").exists()


@pytest.mark.slow
def test_a_killed_a_hung_rank_a_full_disk_then_a_preemption(
    slurm_cluster: None,  # noqa: F811
    model_dir: Path,
    data: dict[str, Path],
    reference: list[dict],
    small_disk: Path,
    tmp_path: Path,
) -> None:
    config, run, logs = _config(tmp_path, model_dir, data), small_disk, tmp_path / "logs"
    logs.mkdir()
    jobs: list[str] = []
    try:
        # 1. A rank killed mid-step: the job ends at once, naming the rank and its phase.
        jobs.append(_submit(tmp_path, config, logs / "kill.log", "kill-in-update:2:1"))
        state, ended = _wait(jobs[-1])
        log = (logs / "kill.log").read_text()
        assert state == "FAILED", log[-3000:]
        assert re.search(r"rank 1 \(pid \d+ on \S+\) died in step 2, phase 'update': its process is gone", log), log
        killed = ended - _fault_time(log)
        assert killed < 15
        assert _job_processes(jobs[-1]) == []
        _intact_at_step_1(run)

        # 2. A rank that hangs: the watchdog ends the job within the heartbeat timeout.
        jobs.append(_submit(tmp_path, config, logs / "stop.log", "stop-in-update:2:1"))
        state, ended = _wait(jobs[-1])
        log = (logs / "stop.log").read_text()
        assert state == "FAILED", log[-3000:]
        assert "after step 1" in log  # resumed
        assert re.search(r"rank 1 \(pid \d+ on \S+\) stopped answering in step 2, phase 'update': no heartbeat for "
                         r"1\d\.\d s \(heartbeat_timeout_s=10; process stopped\)", log), log  # fmt: skip
        waited = ended - _fault_time(log)
        assert TIMEOUT_S < waited < TIMEOUT_S + 15, waited
        assert _job_processes(jobs[-1]) == []
        _intact_at_step_1(run)

        # 3. The filesystem fills during step 2's save (room for half a checkpoint beside step 1's).
        checkpoint = sum(f.stat().st_size for f in (run / "checkpoints" / "last").rglob("*") if f.is_file())
        _resize(run, shutil.disk_usage(run).used + checkpoint // 2)
        jobs.append(_submit(tmp_path, config, logs / "full.log"))
        state, _ = _wait(jobs[-1])
        log = (logs / "full.log").read_text()
        assert state == "FAILED", log[-3000:]
        assert "after step 1" in log
        error = (r"steer-bench train: error: \S+/checkpoints/last: cannot write the checkpoint of step 2 "
                 r"\((rank \d: .*?)\): is the disk full.*? The previous checkpoint in \S+ is intact")  # fmt: skip
        named = re.findall(error, log)  # the ranks' lines may interleave
        assert len(named) == 2, log[-3000:]  # both ranks stop with it: DCP gathers every rank's write errors
        _intact_at_step_1(run)
        _resize(run, 64 * 2**20)  # space is back

        # 4. Through Snakemake's SLURM profile, checkpoints only at the end: SLURM requeues the job mid-run.
        exp = yaml.safe_load(config.read_text())
        exp["train"]["save_every"] = 100
        config.write_text(yaml.safe_dump(exp))
        first, restarted = _preempted_through_snakemake(tmp_path, config, run, jobs)
        resumed = int(re.search(r"stopped after step (\d+), checkpointed", first).group(1))  # the step it was in
        assert resumed >= 2
        assert f"resuming {run} after step 1" in first
        assert f"resuming {run} after step {resumed}" in restarted  # nothing recomputed
        assert deterministic(read_jsonl(run / "metrics.jsonl")) == reference
        print(f"\njob ended {killed:.1f} s after the kill, {waited:.1f} s after the stop; preempted in step {resumed}")
    finally:
        for job in jobs:
            if _state(job) not in ENDED:
                subprocess.run(["scancel", job], check=False)


def _preempted_through_snakemake(workdir: Path, config: Path, run: Path, jobs: list[str]) -> tuple[str, str]:
    """Run the train target with the SLURM profile; once step 2 is logged, requeue its job (SIGTERM to every process
    of it; SLURM then holds a requeued job for 120 s, which the test cuts short). Returns the train log of the
    preempted start and of the requeued one."""
    target = str(run / "train.done")
    cmd = [*SNAKEMAKE, "--directory", str(workdir), target, "--workflow-profile", str(PROFILE),
           "--configfile", str(config), "--slurm-status-command", "squeue",
           "--slurm-init-seconds-before-status-checks", "2", "--jobs", "1"]  # fmt: skip
    train_log = workdir / "results" / "cluster" / "logs" / "train" / "grpo-seed0.log"
    metrics, started = run / "metrics.jsonl", time.time()
    with (workdir / "snakemake.log").open("w") as out:
        smk = subprocess.Popen(cmd, env=snakemake_env(workdir), stdout=out, stderr=out)
        try:  # step 2 logged by this job (its resume first cut the file back to step 1)
            while metrics.stat().st_mtime < started or len(read_jsonl(metrics)) < 2:
                assert smk.poll() is None, (workdir / "snakemake.log").read_text()[-3000:]
                time.sleep(0.1)
            job = next(j["JobID"] for j in slurm_jobs(workdir) if j["Comment"] == "rule_train_wildcards_grpo_0")
            jobs.append(job)
            subprocess.run(["scontrol", "requeue", job], check=True)
            while _state(job) != "PENDING":
                time.sleep(0.25)
            first = train_log.read_text()
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)
            assert smk.wait(timeout=600) == 0, (workdir / "snakemake.log").read_text()[-3000:]
        finally:
            if smk.poll() is None:
                smk.terminate()
                smk.wait()
    assert "1 of 1 steps (100%) done" in (workdir / "snakemake.log").read_text()
    fields = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True).stdout
    assert "JobState=COMPLETED" in fields, fields
    assert "Restarts=1" in fields, fields  # the same job, started twice
    dry = subprocess.run([*cmd[:-2], "--dry-run"], env=snakemake_env(workdir), capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "Nothing to be done" in dry.stdout + dry.stderr, dry.stdout[-2000:]  # no incomplete or stale output
    return first, train_log.read_text()

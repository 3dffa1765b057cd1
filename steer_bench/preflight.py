"""``steer-bench preflight``: measure a launch in minutes instead of failing hours into it.

Run under the same launcher as the experiment's training jobs, on the machine they will run on. Two short runs of
one method with the recipe's model, engines, precision, micro-batch and lengths, but the fewest prompts the launch
can split (one micro-batch per rank, one optimizer step per rollout), every response forced to the recipe's
maximum length (``rollout.ignore_eos``: the worst case of memory and time):

- run A: 2 steps, a checkpoint after each, validation on the second (on ``validation_problems`` problems);
- run B: resumes from A's last checkpoint (model, DCP shards) and trains a third step.

From their phase tables (``steer_bench.train.phases``) and step timings it reports per phase the peak memory and
time, extrapolates a full run's wall time, the table's node-hours and disk, and checks them against the card
(every rank's peak ≤ 90% of its memory), the checkpoint filesystem (free space for the whole table) and the
process-group timeout (a save in half of it). Extrapolation, stated: rollout and validation time scale with the
waves of decoding (sequences per engine / what it decodes at once: memory-bound, so a wave of a full batch is
taken to cost what the measured wave cost — optimistic), the π_old pass, grading and update with the rows per rank.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steer_bench import files
from steer_bench.config.run import TrainConfig
from steer_bench.data import load_prepared
from steer_bench.errors import SteerBenchError
from steer_bench.experiment import ExperimentConfig
from steer_bench.train import train

HEADROOM = 0.10
VALIDATION_PROBLEMS = 2


def shrink(cfg: TrainConfig, world: int) -> list[str]:
    """Overrides of the ``train`` section for run A: the fewest prompts that give every rank whole micro-batches."""
    k = cfg.micro_batch_size // math.gcd(cfg.rollout.n, cfg.micro_batch_size)  # prompts per rank per micro-batch
    prompts = k * world
    return [
        f"prompts_per_step={prompts}",
        f"mini_batch_prompts={prompts}",
        "ppo_epochs=1",
        "steps=2",
        "save_every=1",
        "rollout.ignore_eos=true",
        "validation.every_n_steps=2",
        f"validation.limit={VALIDATION_PROBLEMS}",
        "validation.select_after=0",
        "log_rollouts_every=0",
        "track=false",
        "analysis.every_n_steps=0",
    ]


@dataclass
class Measured:
    """What the two runs measured, gathered from every rank."""

    shrunk: TrainConfig
    steps: list[dict[str, float]]  # run A's metrics.jsonl rows (reduced over ranks)
    phases: list[dict[str, dict[str, float]]]  # per rank: run A's phase table, run B's resume
    startup: dict[str, float]
    checkpoint_bytes: dict[str, int]
    validation_problems: int  # of the experiment's validation set (its limit applied)


def measure(exp: ExperimentConfig, method: str, out: Path) -> Measured:
    """Runs A and B in this process (every rank of the launch calls it); their phase tables from every rank."""
    world = launch_world()
    seed = exp.seeds[0]
    shrunk = exp.train_config(seed, shrink(exp.train_config(seed), world))
    preset = exp.method(method)
    a = train(shrunk, preset, out / "run")
    b = train(exp.train_config(seed, [*shrink(exp.train_config(seed), world), "steps=3"]), preset, out / "run")
    mine = a["phases"] | {"resume": b["phases"].get("resume", {}), "load_on_resume": b["phases"]["load"]}
    phases = [mine]
    if torch.distributed.is_initialized() and world > 1:
        phases = [{} for _ in range(world)]
        torch.distributed.all_gather_object(phases, mine)
    run = out / "run"
    sizes = {
        name: sum(f.stat().st_size for f in (run / "checkpoints" / name).rglob("*") if f.is_file())
        for name in ("last", "best")
    }
    steps = files.read_jsonl(run / "metrics.jsonl")[:2]
    return Measured(shrunk, steps, phases, a["startup"], sizes, _validation_problems(exp.train_config(seed)))


def launch_world() -> int:
    """The launch's processes, before any process group exists (the trainer makes it): the launcher's WORLD_SIZE."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def _validation_problems(cfg: TrainConfig) -> int:
    if not cfg.validation.every_n_steps or cfg.validation.data is None:
        return 0
    n = len(load_prepared(cfg.validation.data))
    return min(n, cfg.validation.limit) if cfg.validation.limit else n


def _waves(sequences: float, concurrency: float | None) -> float:
    return 1.0 if not concurrency else math.ceil(sequences / concurrency)


def extrapolate(exp: ExperimentConfig, m: Measured, world: int, nodes: int) -> dict[str, Any]:
    """A full run's and the whole table's time, node-hours and disk, from the measurements (module docstring)."""
    cfg, small = exp.train_config(exp.seeds[0]), m.shrunk
    step = m.steps[-1]
    engines = world // cfg.rollout.vllm.tensor_parallel_size if cfg.rollout.engine == "vllm" else world
    conc = m.startup.get("engine_full_length_seqs")
    full_seqs, small_seqs = cfg.prompts_per_step * cfg.rollout.n / engines, small.prompts_per_step * small.rollout.n
    rows = cfg.prompts_per_step * cfg.rollout.n / small.prompts_per_step / small.rollout.n  # rows per rank, ×
    rollout = step["time/rollout"] * (
        _waves(full_seqs, conc) / _waves(small_seqs / engines, conc) if conc else full_seqs * engines / small_seqs
    )
    per_step = {
        "rollout": rollout,
        "grading": step["time/grading"] * rows,
        "old_logprobs": step["time/old_logprobs"] * rows,
        "update": step["time/update"] * rows * cfg.ppo_epochs,
    }
    step_s = sum(per_step.values())
    ph = m.phases[0]
    val_seqs = m.validation_problems * cfg.validation.n
    validation = 0.0
    if cfg.validation.every_n_steps:
        measured = VALIDATION_PROBLEMS * cfg.validation.n
        scale = _waves(val_seqs, conc) / _waves(measured, conc) if conc else val_seqs / measured
        validation = ph["validation"]["seconds_max"] * scale
    validations = cfg.steps // cfg.validation.every_n_steps if cfg.validation.every_n_steps else 0
    saves = cfg.steps // cfg.save_every + validations  # last every save_every; best at most once per validation
    startup = ph["load"]["seconds_max"] + ph["engine_start"]["seconds_max"]
    run_s = startup + cfg.steps * step_s + validations * validation + saves * ph["checkpoint"]["seconds_max"]
    runs = len(exp.methods) * len(exp.seeds)
    last, best = m.checkpoint_bytes["last"], m.checkpoint_bytes["best"]
    return {
        "per_step_s": per_step,
        "step_s": step_s,
        "validation_s": validation,
        "startup_s": startup,
        "run_hours": run_s / 3600,
        "runs": runs,
        "nodes": nodes,
        "table_node_hours": runs * nodes * run_s / 3600,
        "disk_run_steady_gb": (last + best) / 1e9,
        "disk_run_peak_gb": (2 * last + best) / 1e9,
        "disk_table_gb": runs * (last + best) / 1e9,
    }


def checks(exp: ExperimentConfig, m: Measured, plan: dict[str, Any], out: Path) -> list[tuple[str, bool, str]]:
    """(check, passed, detail) for the card, the filesystem and the collective timeout."""
    cfg = exp.train_config(exp.seeds[0])
    result = []
    if torch.cuda.is_available():
        card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory / 2**20
        worst = max(p[name]["peak_mb"] for p in m.phases for name in p if p[name])
        what = f"the busiest rank's device peak {worst / 1024:.1f} GiB of {card / 1024:.1f} GiB"
    else:  # ranks of one host share its memory: their peaks, added
        card = _host_total_mb()
        worst = sum(max(p[name]["peak_mb"] for name in p if p[name]) for p in m.phases)
        what = f"the ranks' resident peaks together {worst / 1024:.1f} GiB of the host's {card / 1024:.1f} GiB"
    result.append(("memory", worst <= (1 - HEADROOM) * card, f"{what} (limit {1 - HEADROOM:.0%})"))
    free = shutil.disk_usage(out).free / 1e9
    need = plan["disk_table_gb"] + plan["disk_run_peak_gb"] - plan["disk_run_steady_gb"]
    disk = (
        f"{free:.1f} GB free for the table's {need:.1f} GB (every run's last + best checkpoint, one of them mid-save)"
    )
    result.append(("disk", free >= need, disk))
    save = max(p["checkpoint"]["seconds_max"] for p in m.phases)
    timeout = cfg.collective_timeout_s
    result.append(("timeout", 2 * save <= timeout, f"a save took {save:.1f} s; collective_timeout_s={timeout} (≥ 2×)"))
    return result


def _host_total_mb() -> float:
    with open("/proc/meminfo") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("MemTotal:"))


def report(exp: ExperimentConfig, m: Measured, plan: dict[str, Any], verdicts: list[tuple[str, bool, str]]) -> str:
    """The markdown report (preflight.md)."""
    small, p = m.shrunk, plan
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    lines = [
        f"# Preflight of `{exp.name}`",
        "",
        f"Shrunk launch: {small.prompts_per_step} prompts × {small.rollout.n} per step, micro-batch "
        f"{small.micro_batch_size}, responses forced to {small.rollout.max_new_tokens} tokens; {len(m.phases)} "
        f"rank(s); device: {device}.",
        "",
        "| phase | count | seconds (mean / max) | peak MiB (device, or RSS), max over ranks | torch peak MiB |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, first in m.phases[0].items():
        if first:
            rows = [ranks[name] for ranks in m.phases]
            peak, torch_peak = max(r["peak_mb"] for r in rows), max(r["torch_peak_mb"] for r in rows)
            seconds = f"{first['seconds_mean']:.2f} / {first['seconds_max']:.2f}"
            lines.append(f"| {name} | {first['count']} | {seconds} | {peak:.0f} | {torch_peak:.0f} |")
    per_step = ", ".join(f"{k} {v:.1f} s" for k, v in p["per_step_s"].items())
    lines += [
        "",
        "Extrapolated to the experiment (one run, then every run of the table):",
        "",
        f"- per step: {per_step} = {p['step_s']:.1f} s; validation {p['validation_s']:.1f} s; start-up "
        f"{p['startup_s']:.1f} s",
        f"- a run: {p['run_hours']:.2f} h; the table: {p['runs']} runs × {p['nodes']} node(s) = "
        f"{p['table_node_hours']:.1f} node-hours",
        f"- disk: {p['disk_run_steady_gb']:.3g} GB per run ({p['disk_run_peak_gb']:.3g} GB while saving), "
        f"{p['disk_table_gb']:.3g} GB for the table",
        "",
        "| check | result | detail |",
        "|---|---|---|",
        *(f"| {name} | {'pass' if ok else 'FAIL'} | {detail} |" for name, ok, detail in verdicts),
    ]
    return "\n".join(lines) + "\n"


def preflight(exp: ExperimentConfig, method: str, out: Path) -> tuple[str, bool]:
    """Measure, extrapolate and check; the main process writes ``preflight.md`` and ``preflight.json`` into
    ``out``. Returns (the report, whether every check passed)."""
    if out.exists():
        shutil.rmtree(out / "run", ignore_errors=True)  # a fresh measurement every time (it never resumes)
    world = launch_world()
    m = measure(exp, method, out)
    distributed = world > 1  # the trainer's process group outlives its runs (the engines leave it up)
    nodes = max(1, world // max(1, torch.cuda.device_count()) if torch.cuda.is_available() else 1)
    plan = extrapolate(exp, m, world, nodes)
    verdicts = checks(exp, m, plan, out)
    text = report(exp, m, plan, verdicts)
    if distributed:
        torch.distributed.barrier()  # every rank is done with the run folder
    if not distributed or torch.distributed.get_rank() == 0:
        shutil.rmtree(out / "run")  # its checkpoints are the size of the real ones: the numbers are all we keep
        files.write_text(out / "preflight.md", text)
        record = {
            "plan": plan,
            "checks": [{"check": c, "passed": ok, "detail": d} for c, ok, d in verdicts],
            **{k: getattr(m, k) for k in ("phases", "startup", "checkpoint_bytes", "steps")},
        }
        files.write_json(out / "preflight.json", record)
    failed = [c for c, ok, _ in verdicts if not ok]
    if failed:
        raise SteerBenchError(f"preflight of {exp.name}: {', '.join(failed)} failed:\n{text}")
    return text, True

"""Run a study: every setting × method × seed, in a process pool (one torch thread per worker).

Seeds are paired: run (method, seed) of a setting starts from the same task and initial table as every
other method's run with that seed. Results come back as two DataFrames (per-step metrics, probe points).
"""

from __future__ import annotations

import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import pandas as pd
import torch

from steer_bench.config.method import MethodConfig, load_method
from steer_bench.errors import SteerBenchError
from steer_bench.tree.config import MethodSpec, SettingConfig, StudyConfig
from steer_bench.tree.loop import RunLog, train_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    setting_name: str
    setting: SettingConfig
    spec: MethodSpec
    method: MethodConfig
    seed: int
    keep_points: bool


@dataclass(frozen=True)
class JobResult:
    job: Job
    log: RunLog
    cpu_s: float
    error: str | None  # a run that diverged (non-finite loss) is a result, not a crash of the study


@dataclass(frozen=True)
class StudyResult:
    metrics: pd.DataFrame  # one row per (setting, method, seed, step)
    points: pd.DataFrame  # probe points of the reference method: per visited state, ΔH and the predictions
    errors: list[dict[str, object]]
    wall_s: float
    cpu_s: float


def load_methods(cfg: StudyConfig) -> dict[str, MethodConfig]:
    """Every method of the study, validated before any run starts (a bad preset fails fast, named)."""
    out = {}
    for spec in cfg.methods:
        try:
            out[spec.label] = load_method(spec.preset, spec.overrides)
        except SteerBenchError as e:
            raise SteerBenchError(f"method {spec.label!r}: {e}") from None
    return out


def jobs_of(cfg: StudyConfig, methods: dict[str, MethodConfig]) -> list[Job]:
    jobs = []
    for name, setting in cfg.settings.items():
        labels = setting.methods if setting.methods is not None else [m.label for m in cfg.methods]
        for spec in cfg.methods:
            if spec.label in labels:
                for seed in range(cfg.seeds):
                    keep = spec.label == cfg.reference
                    jobs.append(Job(name, setting, spec, methods[spec.label], seed, keep))
    return jobs


def run_job(job: Job) -> JobResult:
    torch.set_num_threads(1)
    start = time.process_time()
    lr = job.setting.train.lr * job.spec.lr_scale
    result, error = RunLog(), None
    try:
        train_run(job.setting, job.method.resolve(), lr=lr, seed=job.seed, keep_points=job.keep_points, log=result)
    except SteerBenchError as e:  # recorded in summary.json and the report, with the steps before it
        error = str(e)
    return JobResult(job, result, time.process_time() - start, error)


def _frame(results: list[JobResult], attr: str) -> pd.DataFrame:
    frames = []
    for r in results:
        rows = getattr(r.log, attr)
        if rows:
            df = pd.DataFrame(rows)
            df.insert(0, "seed", r.job.seed)
            df.insert(0, "method", r.job.spec.label)
            df.insert(0, "setting", r.job.setting_name)
            frames.append(df)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def run_study(cfg: StudyConfig) -> StudyResult:
    methods = load_methods(cfg)
    jobs = jobs_of(cfg, methods)
    log.info("tree study: %d runs on %d workers", len(jobs), cfg.workers)
    start = time.perf_counter()
    if cfg.workers == 1:
        results = [run_job(j) for j in jobs]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
            results = list(pool.map(run_job, jobs, chunksize=4))
    wall = time.perf_counter() - start
    errors = [
        {"setting": r.job.setting_name, "method": r.job.spec.label, "seed": r.job.seed, "error": r.error}
        for r in results
        if r.error is not None
    ]
    for e in errors:
        log.warning("run failed: %s", e)
    return StudyResult(
        metrics=_frame(results, "rows"),
        points=_frame(results, "points"),
        errors=errors,
        wall_s=wall,
        cpu_s=sum(r.cpu_s for r in results),
    )

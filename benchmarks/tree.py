"""Time the reasoning-tree study (issue #8's bar: every method × 10 seeds in ≤ 2 minutes on 2 cores). Run by hand:

    .venv/bin/python benchmarks/tree.py [--config configs/tree/default.yaml] [--set workers=2 ...]

Prints the wall time of the runs (process pool included) and of writing the report, the CPU seconds of the
runs (each run's own process time, comparable on a busy machine) and per run, and the load average before
and after: other processes on the same cores inflate the wall time.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from steer_bench.config import load_model
from steer_bench.tree.config import StudyConfig
from steer_bench.tree.report import write_outputs
from steer_bench.tree.study import run_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/tree/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    cfg = load_model(StudyConfig, args.config, args.overrides)
    print(f"cores visible: {len(os.sched_getaffinity(0))}, load average before: {os.getloadavg()}")
    start = time.perf_counter()
    result = run_study(cfg)
    runs_s = time.perf_counter() - start
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_outputs(Path(tmp) / "tree", cfg, result, "benchmark")
        report_s = time.perf_counter() - start
    n_runs = result.metrics.groupby(["setting", "method", "seed"]).ngroups
    print(
        f"{n_runs} runs, {cfg.workers} workers: runs {runs_s:.1f} s wall ({result.cpu_s:.1f} s CPU, "
        f"{result.cpu_s / n_runs:.3f} s CPU per run); report {report_s:.1f} s; total {runs_s + report_s:.1f} s"
    )
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

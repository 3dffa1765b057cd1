"""`steer-bench tree`: run the reasoning-tree study of a config and write its report section.

    steer-bench tree --config configs/tree/default.yaml --out results/tree [--set seeds=3 ...]

Writes DIR/metrics.parquet, probe_points.parquet, runs.csv, summary.json, table.md/.csv, PNG figures and
DIR/tree.md (included verbatim by the pipeline's report), all at once (atomic directory swap).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from steer_bench.config import load_model
from steer_bench.tree.config import StudyConfig

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, help="study YAML (configs/tree/default.yaml or smoke.yaml)")
    parser.add_argument("--out", required=True, help="output directory (replaced atomically)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override key.sub=value")


def run(args: argparse.Namespace) -> int:
    from steer_bench.tree.report import write_outputs
    from steer_bench.tree.study import run_study

    cfg = load_model(StudyConfig, args.config, args.overrides)
    result = run_study(cfg)
    command = "steer-bench tree " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["tree"] else _argv(args))
    summary = write_outputs(Path(args.out), cfg, result, command)
    log.info(
        "tree: %d runs in %.1f s wall (%.1f s CPU); wrote %s", summary["runs"], result.wall_s, result.cpu_s, args.out
    )
    for setting, lines in summary["findings"].items():
        for line in lines:
            log.info("%s: %s", setting, line)
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The arguments as typed, rebuilt when the CLI was called in-process (tests)."""
    return ["--config", args.config, "--out", args.out] + [x for o in args.overrides for x in ("--set", o)]

"""``steer-bench tree``: run the reasoning-tree study and write its report section.

    steer-bench tree --config configs/default.yaml [--set tree.seeds=3]        # the experiment's study
    steer-bench tree --study configs/tree/default.yaml --out DIR [--set seeds=3]   # a study on its own

Writes DIR/metrics.parquet, probe_points.parquet, runs.csv, summary.json, table.md/.csv, PNG figures and
DIR/tree.md (included verbatim by the pipeline's report), all at once (atomic directory swap).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from steer_bench.commands import add_experiment, named_config

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=False)
    alone = parser.add_argument_group("without --config")
    alone.add_argument("--study", help="study YAML (configs/tree/*.yaml); --set then addresses it")
    parser.add_argument("--out", help="output directory (default with --config: results/<exp>/tree)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.config import load_model
    from steer_bench.tree.config import StudyConfig
    from steer_bench.tree.report import write_outputs
    from steer_bench.tree.study import run_study

    exp, study, overrides = named_config(args, "tree", "study")
    out = Path(args.out or exp.root / "tree")
    cfg = load_model(StudyConfig, study, overrides)
    result = run_study(cfg)
    command = "steer-bench tree " + shlex.join(sys.argv[2:] if sys.argv[1:2] == ["tree"] else _argv(args))
    summary = write_outputs(out, cfg, result, command)
    log.info("tree: %d runs in %.1f s wall (%.1f s CPU); wrote %s", summary["runs"], result.wall_s, result.cpu_s, out)
    for setting, lines in summary["findings"].items():
        for line in lines:
            log.info("%s: %s", setting, line)
    return 0


def _argv(args: argparse.Namespace) -> list[str]:
    """The arguments as typed, rebuilt when the CLI was called in-process (tests)."""
    given = [(f"--{k}", getattr(args, k)) for k in ("config", "study", "out") if getattr(args, k)]
    return [x for pair in given for x in pair] + [x for o in args.overrides for x in ("--set", o)]

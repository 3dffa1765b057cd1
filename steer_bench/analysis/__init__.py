"""Entropy-dynamics analysis (the paper's Ω, its quadrants and the covariance estimate, measured for real).

- :class:`EntropyProbe` (``probe``): the trainer's hook; measures every token's entropy change across one optimizer
  step and writes ``<run>/analysis/step_<step>.parquet`` beside per-step ``analysis/...`` metrics.
- ``steer-bench analyze`` (``analyze``): estimator-accuracy and quadrant tables, figures and ``analysis.md``
  (included by ``steer-bench report``) from one or many runs.
- ``stats``: the statistics both use; ``figures``: the PNGs.
"""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from steer_bench.analysis.probe import EntropyProbe
from steer_bench.errors import SteerBenchError

__all__ = ["EntropyProbe", "configure", "run"]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", nargs="+", default=[], help="run directories (results/<exp>/runs/<method>/seed<k>)")
    parser.add_argument(
        "--config", help="experiment YAML: analyse all its runs (--out default: results/<exp>/analysis)"
    )
    parser.add_argument("--out", help="output folder (required without --config)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.analysis.analyze import analyze

    dirs = [Path(d) for d in args.runs]
    out = Path(args.out) if args.out else None
    if args.config:
        from steer_bench.experiment import load_experiment

        exp = load_experiment(args.config)
        dirs += [exp.run_dir(m, s) for m in exp.methods for s in exp.seeds]
        out = out or exp.root / "analysis"
    if not dirs:
        raise SteerBenchError("analyze: give run directories (--runs DIR ...) and/or an experiment (--config FILE)")
    if out is None:
        raise SteerBenchError("analyze: --out is required when only --runs is given")
    command = ["steer-bench", "analyze"]
    command += ["--config", args.config] if args.config else []
    command += ["--runs", *args.runs] if args.runs else []
    command += ["--out", args.out] if args.out else []
    runs = analyze(list(dict.fromkeys(dirs)), out, command=shlex.join(command))
    print(f"wrote {out / 'analysis.md'} ({len(runs.tokens)} tokens of {len(runs.methods)} method(s))")
    return 0

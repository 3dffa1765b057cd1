"""``steer-bench analyze``: entropy-dynamics analysis of an experiment's runs (or of any run folders)."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from steer_bench.commands import add_experiment
from steer_bench.errors import SteerBenchError


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=False)
    parser.add_argument("--runs", nargs="+", default=[], help="run directories (results/<exp>/runs/<method>/seed<k>)")
    parser.add_argument("--out", help="output folder (default with --config: results/<exp>/analysis)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.analysis.analyze import analyze

    dirs, out = [Path(d) for d in args.runs], Path(args.out) if args.out else None
    if args.config:
        from steer_bench.experiment import load_experiment, split_overrides

        exp = load_experiment(args.config, split_overrides(args.overrides)[0])
        dirs += [exp.run_dir(m, s) for m in exp.methods for s in exp.seeds]
        out = out or exp.root / "analysis"
    if not dirs:
        raise SteerBenchError("analyze: give run directories (--runs DIR ...) and/or an experiment (--config FILE)")
    if out is None:
        raise SteerBenchError("analyze: --out is required when only --runs is given")
    command = ["steer-bench", "analyze", *(["--config", args.config] if args.config else [])]
    command += [x for o in args.overrides for x in ("--set", o)]
    command += (["--runs", *args.runs] if args.runs else []) + (["--out", args.out] if args.out else [])
    runs = analyze(list(dict.fromkeys(dirs)), out, command=shlex.join(command))
    print(f"wrote {out / 'analysis.md'} ({len(runs.tokens)} tokens of {len(runs.methods)} method(s))")
    return 0

"""``steer-bench preflight``: measure a launch of the experiment before its table is submitted
(:mod:`steer_bench.preflight`). Run it under the training jobs' launcher (``accelerate launch``), on their machine."""

from __future__ import annotations

import argparse
from pathlib import Path

from steer_bench.commands import add_experiment


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=True)
    parser.add_argument("--method", help="the method to measure (default: the experiment's first)")
    parser.add_argument("--out", help="output folder (default: results/<experiment>/preflight)")


def run(args: argparse.Namespace) -> int:
    import torch

    from steer_bench.experiment import load_experiment, split_overrides
    from steer_bench.preflight import preflight

    exp = load_experiment(args.config, split_overrides(args.overrides)[0])
    out = Path(args.out) if args.out else exp.root / "preflight"
    text, _ = preflight(exp, args.method or exp.methods[0], out)
    if not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0:
        print(text)
    return 0

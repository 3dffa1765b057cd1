"""``steer-bench train``: RL training of one method and seed of an experiment."""

from __future__ import annotations

import argparse

from steer_bench.commands import add_experiment


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=True)
    parser.add_argument("--method", required=True, help="method preset (configs/methods/<name>.yaml)")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--out", help="run directory (default: results/<experiment>/runs/<method>/seed<seed>)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.experiment import load_experiment, split_overrides
    from steer_bench.train import train

    own, nested = split_overrides(args.overrides)
    exp = load_experiment(args.config, own)
    method = exp.method(args.method, nested["method"])
    train(exp.train_config(args.seed), method, args.out or exp.run_dir(args.method, args.seed))
    return 0

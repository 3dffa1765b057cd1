"""``steer-bench validate-config``: validate an experiment and print it resolved, with its training runs."""

from __future__ import annotations

import argparse

from steer_bench.commands import add_experiment


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=True)


def run(args: argparse.Namespace) -> int:
    from steer_bench.config import dump_yaml
    from steer_bench.experiment import load_experiment, split_overrides

    own, _ = split_overrides(args.overrides)
    exp = load_experiment(args.config, own)
    print(dump_yaml(exp))
    for m in exp.methods:
        for s in exp.seeds:
            print(f"run: {exp.run_dir(m, s)}")
    return 0

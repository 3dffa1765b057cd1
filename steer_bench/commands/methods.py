"""``steer-bench methods``: the method presets with their interventions, or the table of every loss metric."""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--metrics", action="store_true", help="print the Markdown table of every loss metric")


def run(args: argparse.Namespace) -> int:
    from steer_bench.algos import metric_table
    from steer_bench.config.method import list_methods, load_method

    if args.metrics:
        print(metric_table(), end="")
        return 0
    for name in list_methods():
        m = load_method(name)
        print(f"{name:<24} {m.advantage.estimator:<12} {m.loss.name:<14} {m.label}")
    return 0

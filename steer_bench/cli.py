"""`steer-bench <subcommand>`: one thin entry point per pipeline stage.

Each subcommand is one module of :mod:`steer_bench.commands` (the grammar shared by all is in its docstring),
defining ``configure(parser)`` and a thin ``run(args) -> int``; only the chosen one is imported, so that
``steer-bench prepare`` never pays for importing vLLM or MLflow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from steer_bench.errors import SteerBenchError

# subcommand -> one-line help; the module steer_bench.commands.<name> provides configure(parser) and run(args).
SUBCOMMANDS: dict[str, str] = {
    "prepare": "normalise datasets into one parquet per dataset",
    "warmstart": "build tokenizer + tiny Qwen2 model and SFT it (CPU miniature)",
    "train": "RL training of one method and seed",
    "preflight": "measure a launch (memory, time, disk) before the table runs",
    "eval": "evaluate a trained run or any HF model on benchmarks",
    "report": "tables and figures from MLflow",
    "analyze": "entropy-dynamics analysis of runs",
    "tree": "the reasoning-tree testbed",
    "validate-config": "validate an experiment config and print the resolved jobs",
    "methods": "list the methods, or print the metric table (--metrics)",
    "launch": "run a train or eval job on its GPUs and nodes (what the Snakefile's train and eval rules call)",
}


def _module(name: str) -> str:
    return f"steer_bench.commands.{name.replace('-', '_')}"


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steer-bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only import the module of the chosen subcommand (others get a placeholder parser for --help).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(_module(name)).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(_module(args.command))
    try:
        return int(module.run(args) or 0)
    except SteerBenchError as e:
        print(f"steer-bench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

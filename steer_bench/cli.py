"""`steer-bench <subcommand>`: one thin entry point per pipeline stage.

Each subcommand lives in its own module, which defines ``configure(parser)`` and ``run(args) -> int``;
modules are imported lazily so that ``steer-bench prepare`` never pays for importing vLLM or MLflow.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from steer_bench.errors import SteerBenchError

# subcommand -> (module, one-line help). The module provides configure(parser) and run(args).
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("steer_bench.data.prepare", "normalise datasets into one parquet per dataset"),
    "warmstart": ("steer_bench.train.warmstart", "build tokenizer + tiny Qwen2 model and SFT it (CPU miniature)"),
    "train": ("steer_bench.train", "RL training of one method and seed"),
    "eval": ("steer_bench.commands.eval", "evaluate a trained run or any HF model on benchmarks"),
    "report": ("steer_bench.report", "tables and figures from MLflow"),
    "analyze": ("steer_bench.analysis", "entropy-dynamics analysis of runs"),
    "tree": ("steer_bench.commands.tree", "the reasoning-tree testbed"),
    "validate-config": ("steer_bench.experiment", "validate an experiment config and print the resolved jobs"),
}


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="steer-bench", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # Only import the module of the chosen subcommand (others get a placeholder parser for --help).
    chosen = next((a for a in argv if a in SUBCOMMANDS), None)
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            importlib.import_module(module).configure(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(SUBCOMMANDS[args.command][0])
    try:
        return int(module.run(args) or 0)
    except SteerBenchError as e:
        print(f"steer-bench {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""One thin entry per subcommand (``configure(parser)`` + ``run(args) -> int``), all with one grammar:

    steer-bench <command> --config EXPERIMENT.yaml [--set PATH=VALUE ...] [command options]

``PATH`` is a dotted path into the experiment YAML (``train.optim.lr=1e-6``, ``eval.workers=4``,
``seeds=[0,1]``) or, through the config the experiment names, into it: ``method.<key>`` (the preset of the run:
``method.loss.params.weight_min=0.7``), ``warmstart.<key>``, ``tree.<key>``, ``protocol.<key>``. Outputs default to
the experiment's layout (``steer_bench.experiment``). Commands that also run without an experiment (``prepare``,
``warmstart``, ``tree``, ``eval``) take the file they need and ``--out`` instead; ``--set`` then addresses that file.
"""

from __future__ import annotations

import argparse
from typing import Any

from steer_bench.errors import SteerBenchError


def add_experiment(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The shared ``--config`` / ``--set`` options."""
    parser.add_argument("--config", required=required, help="experiment YAML (e.g. configs/default.yaml)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override, repeatable: an experiment path, or method./warmstart./tree./protocol.<path>",
    )


def named_config(args: argparse.Namespace, key: str, flag: str) -> tuple[Any, str, list[str]]:
    """(the experiment or None, the file of ``key`` (warmstart, tree) it names — or, without ``--config``, the
    file given as ``--<flag>`` with ``--out`` —, that file's ``--set`` overrides)."""
    if args.config:
        from steer_bench.experiment import load_experiment, split_overrides

        own, nested = split_overrides(args.overrides)
        exp = load_experiment(args.config, own)
        if not getattr(exp, key):
            raise SteerBenchError(f"{args.config}: the experiment has no {key!r} file")
        return exp, getattr(exp, key), nested[key]
    if getattr(args, flag) and args.out:
        return None, getattr(args, flag), args.overrides
    raise SteerBenchError(f"{args.command} needs --config (an experiment), or --{flag} and --out")

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


def add_experiment(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The shared ``--config`` / ``--set`` options."""
    parser.add_argument("--config", required=required, help="experiment YAML (e.g. configs/default.yaml)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="PATH=VALUE",
        help="override, repeatable: an experiment path, or method./warmstart./tree./protocol.<path>",
    )  # fmt: skip

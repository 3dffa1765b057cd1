"""One CLI grammar: every subcommand takes ``--config EXPERIMENT`` and repeatable ``--set PATH=VALUE``, and the
override paths reach into the experiment or, by prefix, into the files it names."""

from __future__ import annotations

import pytest

from steer_bench.cli import SUBCOMMANDS, build_parser
from steer_bench.experiment import split_overrides

REQUIRED = {"prepare": ["--dataset", "synth_test"], "train": ["--method", "grpo", "--seed", "0"],
            "launch": ["train", "--method", "grpo", "--seed", "0"]}  # fmt: skip


@pytest.mark.parametrize("command", sorted(set(SUBCOMMANDS) - {"methods"}))
def test_every_subcommand_takes_the_experiment_and_the_same_overrides(command: str) -> None:
    argv = [command, "--config", "exp.yaml", "--set", "train.steps=3", "--set", "method.loss.clip_high=0.3"]
    args = build_parser(argv).parse_args([*argv, *REQUIRED.get(command, [])])
    assert args.config == "exp.yaml"
    assert args.overrides == ["train.steps=3", "method.loss.clip_high=0.3"]


def test_overrides_split_into_the_experiment_and_the_files_it_names() -> None:
    own, nested = split_overrides(
        ["train.optim.lr=1e-6", "method.loss.params.weight_min=0.7", "tree=configs/tree/smoke.yaml",
         "tree.seeds=2", "warmstart.sft.steps=5", "protocol.n=4", "eval.workers=4", "methods=[grpo]"]
    )  # fmt: skip
    assert own == ["train.optim.lr=1e-6", "tree=configs/tree/smoke.yaml", "eval.workers=4", "methods=[grpo]"]
    assert nested == {
        "method": ["loss.params.weight_min=0.7"],
        "warmstart": ["sft.steps=5"],
        "tree": ["seeds=2"],
        "protocol": ["n=4"],
    }

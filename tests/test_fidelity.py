"""The paper configs default to what the STEER release does (issue 11; docs/fidelity.md), the CPU miniature keeps
its own defaults, and every release behaviour that differs from ours is a named option."""

from __future__ import annotations

from pathlib import Path

import pytest

from steer_bench.evaluation.protocol import load_protocol
from steer_bench.experiment import load_experiment

REPO = Path(__file__).resolve().parents[1]
PAPER = sorted((REPO / "configs" / "paper").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_use_the_release_defaults(path: Path) -> None:
    cfg = load_experiment(path).train_config(0)
    assert (cfg.reward.grader, cfg.reward.truncated) == ("release_strict", "auto")
    assert (cfg.reward.correct, cfg.reward.incorrect) == (1.0, -1.0)
    assert (cfg.validation.grader, cfg.validation.select_after) == ("release_both", 80)
    assert cfg.on_long_prompt == "drop"


def test_paper_protocol_grades_as_the_release() -> None:
    assert load_protocol("paper").grader == "release_both"


def test_cpu_miniature_keeps_its_defaults() -> None:
    cfg = load_experiment(REPO / "configs" / "default.yaml").train_config(0)
    assert (cfg.reward.grader, cfg.reward.truncated) == ("math_verify", "auto")
    assert (cfg.validation.grader, cfg.validation.select_after, cfg.on_long_prompt) == (None, 0, "error")

"""The paper configs default to what the STEER release does (issue 11; docs/fidelity.md), the CPU miniature keeps
its own defaults, and every release behaviour that differs from ours is a named option."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from steer_bench.evaluation.protocol import load_protocol
from steer_bench.experiment import load_experiment

REPO = Path(__file__).resolve().parents[2]
PAPER = sorted((REPO / "configs" / "paper").glob("[!_]*.yaml"))


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_configs_use_the_release_defaults(path: Path) -> None:
    cfg = load_experiment(path).train_config(0)
    assert (cfg.reward.grader, cfg.reward.truncated) == ("release_strict", "auto")
    assert (cfg.reward.correct, cfg.reward.incorrect) == (1.0, -1.0)
    # The release selects from step 80 of 200 (save_after=80): the first validation at ≥ 40% of the run, so 80 in
    # every paper table and the same fraction at the rehearsal's scale (step 2 of 4, validating every 2 steps).
    every = cfg.validation.every_n_steps
    assert (cfg.validation.grader, cfg.validation.select_after) == (
        "release_both",
        math.ceil(0.4 * cfg.steps / every) * every,
    )
    assert cfg.on_long_prompt == "drop"
    assert (cfg.batch_order, cfg.loss_scale) == ("release", "release")


def test_paper_protocol_grades_as_the_release() -> None:
    assert load_protocol("paper").grader == "release_both"


def test_cpu_miniature_keeps_its_defaults() -> None:
    cfg = load_experiment(REPO / "configs" / "default.yaml").train_config(0)
    assert (cfg.reward.grader, cfg.reward.truncated) == ("math_verify", "auto")
    assert (cfg.validation.grader, cfg.on_long_prompt) == (None, "error")
    # selection (the miniature's views (a) and (c)) from 40% of the run on, as the release's 80 of 200 steps
    assert cfg.validation.select_after == 0.4 * cfg.steps
    assert (cfg.batch_order, cfg.loss_scale) == ("grouped", "global_tokens")


def _exp(name: str):
    return load_experiment(REPO / "configs" / "paper" / f"{name}.yaml")


def _method(exp, name: str):
    from steer_bench.config.method import load_method

    return load_method(name, exp.method_overrides.get(name, []))


def test_table3_trains_both_lambda_min_and_the_report_labels_them() -> None:
    from steer_bench.report import reference
    from steer_bench.report.collect import Results
    from steer_bench.report.document import settings_lines
    from steer_bench.report.tables import main_table

    exp = _exp("table3_7b")
    assert _method(exp, "steer").loss.params["weight_min"] == 0.8  # run/run_exp.sh
    assert _method(exp, "steer_lmin07").loss.params["weight_min"] == 0.7  # the paper text
    lmin07, release = _method(exp, "steer_lmin07").model_dump(), _method(exp, "steer").model_dump()
    for d in (lmin07, release):  # the two presets differ in λ_min alone
        del d["name"], d["label"], d["description"], d["loss"]["params"]["weight_min"]
    assert lmin07 == release
    table = main_table(exp, Results())
    lines = settings_lines(exp, table)
    assert "- Row STEER: ε_low 0.2, ε_high 0.28, λ_min 0.8" in lines
    assert "- Row STEER (lambda_min 0.7): ε_low 0.2, ε_high 0.28, λ_min 0.7" in lines
    # Both are compared with the paper's STEER row.
    assert reference.paper_value("table3_7b", table.labels["steer_lmin07"], "avg") == 48.6
    assert reference.paper_value("table3_7b", table.labels["steer"], "avg") == 48.6


PAIRS = {  # table: (STEER row, its matched control)
    "plugin_7b": [("rloo_steer", "rloo_clip_higher"), ("opo_steer", "opo_clip_higher")],
    "table12_1p5b": [("steer", "clip_higher")],
    "table4_14b": [("steer", "clip_higher")],
    "table3_7b": [("steer", "clip_higher")],
    "table6_extreme": [("steer", "grpo")],
}


@pytest.mark.parametrize("table", sorted(PAIRS))
def test_every_steer_row_has_a_control_that_differs_only_in_the_weighting(table: str) -> None:
    exp = _exp(table)
    for steer_name, control_name in PAIRS[table]:
        steer, control = _method(exp, steer_name), _method(exp, control_name)
        assert steer.advantage == control.advantage
        same = ("clip_low", "clip_high", "clip_c", "agg", "entropy_coef")
        assert [getattr(steer.loss, k) for k in same] == [getattr(control.loss, k) for k in same]
        assert (steer.loss.name, control.loss.name) == ("steer", "ppo")


def test_control_rows_are_marked_in_the_report() -> None:
    from steer_bench.report.collect import Results
    from steer_bench.report.document import settings_lines
    from steer_bench.report.tables import main_table

    exp = _exp("plugin_7b")
    table = main_table(exp, Results())
    assert table.labels["rloo_clip_higher"] == "RLOO, eps_high 0.28 (control)"
    assert table.labels["rloo"] == "RLOO"  # the paper's row, not a control
    assert any(ln.endswith("a matched control, not a paper row") for ln in settings_lines(exp, table))
    assert _exp("table12_1p5b").controls == ["clip_higher"]


def test_controls_must_be_methods(tmp_path: Path) -> None:
    from steer_bench.errors import SteerBenchError

    with pytest.raises(SteerBenchError, match="'controls' names 'opo_clip_higher'"):
        load_experiment(REPO / "configs" / "paper" / "table4_14b.yaml", ["controls=[opo_clip_higher]"])


def test_14b_micro_batch_is_the_release_normalisation_group() -> None:
    assert _exp("table4_14b").train_config(0).micro_batch_size == _exp("table3_7b").train_config(0).micro_batch_size
    text = (REPO / "configs" / "paper" / "table4_14b.yaml").read_text()
    assert "the loss is exact" not in text

"""Issue 27's entropy-against-target view: the controllers read from the presets, the final entropy's distance
to each target, and the study's figure and report section."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from steer_bench.cli import main
from steer_bench.config.method import load_method
from steer_bench.tree.summary import control_rows, entropy_control

SMOKE = Path(__file__).resolve().parents[2] / "configs" / "tree" / "smoke.yaml"


def test_each_controller_is_read_from_its_preset() -> None:
    assert entropy_control(load_method("grpo")) is None
    entropic = entropy_control(load_method("entropic"))
    assert (entropic.kind, entropic.target, entropic.output) == ("set point", 0.1, "loss/entropic_alpha")
    adaptive = entropy_control(load_method("adaptive_entropy"))
    assert (adaptive.kind, adaptive.target, adaptive.output) == ("floor", 0.2, "loss/entropy_coef")
    schedule = entropy_control(load_method("entropy_loss_linear"))
    assert (schedule.kind, schedule.target, schedule.output) == ("schedule", None, "loss/entropy_coef")
    assert math.isnan(schedule.distance(0.3, total_steps=10))
    band = entropy_control(load_method("entrocraft"))
    assert (band.kind, band.output) == ("band", None)
    # row step s is the update k = s + 1 of T: the first row is one step into the anneal, the last at its end
    assert band.band_at(0, 10) == pytest.approx((0.58, 0.68))
    assert band.band_at(9, 10) == pytest.approx((0.4, 0.5))


def test_distance_is_to_the_set_point_or_to_the_final_band() -> None:
    entropic = entropy_control(load_method("entropic"))
    assert entropic.distance(0.05, total_steps=10) == pytest.approx(0.05)
    assert entropic.distance(0.3, total_steps=10) == pytest.approx(0.2)
    band = entropy_control(load_method("entrocraft"))  # [0.4, 0.5] at k = T
    assert band.distance(0.45, total_steps=10) == 0.0
    assert band.distance(0.3, total_steps=10) == pytest.approx(0.1)
    assert band.distance(0.8, total_steps=10) == pytest.approx(0.3)


def test_control_rows_give_mean_and_standard_error_over_paired_seeds() -> None:
    runs = pd.DataFrame({
        "method": ["grpo"] * 3 + ["entropic"] * 3,
        "seed": [0, 1, 2] * 2,
        "final_entropy": [0.04, 0.06, 0.05, 0.10, 0.16, 0.13],
    })  # fmt: skip
    rows = control_rows(runs, {"entropic": entropy_control(load_method("entropic"))}, "grpo", total_steps=10)
    assert rows[0]["method"] == "grpo"
    assert rows[0]["H final"] == "0.050 ± 0.006"  # std 0.01 / √3
    entropic = rows[1]
    assert entropic["target"] == "set point 0.1"
    assert entropic["H final"] == "0.130 ± 0.017"  # std 0.03 / √3
    assert entropic["distance to target"] == "0.030 ± 0.017"  # |0, 0.06, 0.03|: mean 0.03, std 0.03
    assert entropic["grpo: distance to target"] == "0.050 ± 0.006"


@pytest.mark.slow
def test_a_study_with_controllers_draws_the_figure_and_the_report_section(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    methods = "methods=[{label: grpo, preset: grpo}, {label: entropic, preset: entropic}, " \
        "{label: entrocraft, preset: entrocraft}]"  # fmt: skip
    assert main(["tree", "--study", str(SMOKE), "--out", str(out), "--set", "seeds=2", "--set", methods,
                 "--set", "settings.sparse.methods=null"]) == 0  # fmt: skip
    assert (out / "entropy_control.png").stat().st_size > 1000
    tree_md = (out / "tree.md").read_text()
    assert "### Entropy against the controllers' targets" in tree_md
    assert "](entropy_control.png)" in tree_md
    summary = json.loads((out / "summary.json").read_text())
    rows = {r["method"]: r for r in summary["entropy_control"]["dense"]}
    assert list(rows) == ["grpo", "entropic", "entrocraft"]
    assert rows["entropic"]["target"] == "set point 0.1"
    assert rows["entrocraft"]["target"] == "band [0.6→0.4, 0.7→0.5]"
    assert set(summary["entropy_control"]) == {"dense", "sparse"}

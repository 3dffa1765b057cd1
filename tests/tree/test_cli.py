"""`steer-bench tree` end to end on the smoke config, and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from steer_bench.cli import main
from steer_bench.config import load_model
from steer_bench.tree.config import StudyConfig

REPO = Path(__file__).resolve().parents[2]
SMOKE = REPO / "configs" / "tree" / "smoke.yaml"


@pytest.mark.slow
def test_smoke_study_writes_every_artefact(tmp_path: Path) -> None:
    out = tmp_path / "tree"
    assert main(["tree", "--study", str(SMOKE), "--out", str(out), "--set", "seeds=2"]) == 0
    cfg = load_model(StudyConfig, SMOKE)
    metrics = pd.read_parquet(out / "metrics.parquet")
    expected_runs = sum(len(s.methods or cfg.methods) * cfg.seeds for s in cfg.settings.values())
    assert metrics.groupby(["setting", "method", "seed"]).ngroups == expected_runs
    assert len(metrics) == sum(
        len(s.methods or cfg.methods) * cfg.seeds * (s.train.steps + 1) for s in cfg.settings.values()
    )
    points = pd.read_parquet(out / "probe_points.parquet")
    assert set(points["method"]) == {cfg.reference}
    assert set(points["probe"]) == {"probe", "probe_tiny"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"] == expected_runs
    assert summary["errors"] == []
    grpo = summary["methods"]["dense"]["grpo"]
    assert grpo["final_accuracy"]["n"] == cfg.seeds
    assert grpo["final_accuracy"]["mean"] > grpo["initial_accuracy"]["mean"]
    tree_md = (out / "tree.md").read_text()
    assert "## Reasoning-tree testbed" in tree_md
    assert "steer-bench tree --study" in tree_md
    for name in ("dense_entropy.png", "dense_accuracy.png", "dense_omega_vs_dh.png", "sparse_quadrants.png"):
        assert f"]({name})" in tree_md
        assert (out / name).stat().st_size > 1000
    table = (out / "table.md").read_text()
    assert "| steer_first_order | p·Ω (our ablation) |" in table
    assert (out / "table.csv").exists()
    assert (out / "runs.csv").exists()


def test_bad_config_names_the_culprit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "tree"
    assert main(["tree", "--study", str(SMOKE), "--out", str(out), "--set", "reference=nope"]) == 2
    assert "reference 'nope' is not a method label" in capsys.readouterr().err
    assert main(["tree", "--study", str(SMOKE), "--out", str(out), "--set", "settings.dense.train.lrr=1"]) == 2
    assert "unknown key 'settings.dense.train.lrr'" in capsys.readouterr().err
    data = yaml.safe_load(SMOKE.read_text())
    data["methods"][1]["preset"] = "no_such_method"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    assert main(["tree", "--study", str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "method 'grpo_lr0.8'" in err
    assert "unknown method 'no_such_method'" in err
    assert not out.exists()

"""The Snakemake pipeline: the real `snakemake` on configs/smoke.yaml end to end (report numbers checked
against the evaluation files), nothing redone on a re-run, only the touched branch re-run, every paper
config's job graph, and broken configs failing before any job starts."""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from steer_bench.files import read_json

pytestmark = pytest.mark.slow  # every test runs the real snakemake
REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]
# The paper tables (rehearsal.yaml is the CPU dress rehearsal of them: tests/system/test_rehearsal.py).
PAPER_CONFIGS = sorted(p.name for p in (REPO / "configs" / "paper").glob("[!_]*.yaml") if p.name != "rehearsal.yaml")


def snakemake(workdir: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}"}
    cmd = [*SNAKEMAKE, "--directory", str(workdir), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run (empty when there is nothing to do)."""
    out = snakemake(workdir, "-n", "--quiet", "rules", *args)
    assert out.returncode == 0, out.stderr[-3000:]
    jobs: dict[str, int] = {}
    lines = (out.stdout + out.stderr).splitlines()
    for i, line in enumerate(lines):
        if line.startswith("job") and "count" in line:
            for row in lines[i + 2 :]:
                parts = row.split()
                if len(parts) != 2 or not parts[1].isdigit():
                    break
                if parts[0] != "total":
                    jobs[parts[0]] = int(parts[1])
    return jobs


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh working directory that sees the repo's configs (as a user's checkout would)."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    return tmp_path


def test_smoke_pipeline_end_to_end_rerun_and_partial_rerun(workdir: Path) -> None:
    cfg = str(REPO / "configs" / "smoke.yaml")
    run = snakemake(workdir, "--cores", "2", "--configfile", cfg)
    assert run.returncode == 0, run.stderr[-5000:]
    root = workdir / "results" / "smoke"
    smoke = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    report = root / "report"
    for name in ("report.md", "main_table.md", "main_table.tex", "main_table.csv"):
        assert (report / name).stat().st_size > 0, name
    assert any((report / "figures").glob("*entropy*.png"))
    assert (root / "tree" / "tree.md").is_file()
    assert (root / "analysis" / "analysis.md").is_file()

    # The report's numbers are the evaluation files' numbers (MLflow in between): acc in percent per method.
    rows = {r["row"]: r for r in csv.DictReader((report / "main_table.csv").open())}
    for method in smoke["methods"]:
        summary = read_json(root / "eval" / method / "seed0" / "synth_test" / "summary.json")
        assert summary["complete"] is True
        assert float(rows[method]["synth_test_mean_pct"]) == pytest.approx(100 * summary["metrics"]["acc"])
    base = read_json(root / "eval" / "base" / "synth_test" / "summary.json")
    assert float(rows["base"]["synth_test_mean_pct"]) == pytest.approx(100 * base["metrics"]["acc"])
    text = (report / "report.md").read_text()
    assert "GRPO" in text
    assert "STEER" in text

    # Re-running does nothing.
    assert planned_jobs(workdir, "--configfile", cfg) == {}
    # Deleting one run's outputs re-runs only that branch (its evaluation and the aggregates downstream).
    shutil.rmtree(root / "runs" / "steer" / "seed0")
    assert planned_jobs(workdir, "--configfile", cfg) == {
        "train": 1, "eval_run": 1, "analyze": 1, "report": 1, "all": 1}  # fmt: skip


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_config_job_graph_resolves(name: str, workdir: Path) -> None:
    config = yaml.safe_load((REPO / "configs" / "paper" / name).read_text())
    jobs = planned_jobs(workdir, "--configfile", str(REPO / "configs" / "paper" / name))
    n_runs = len(config["methods"]) * len(config.get("seeds", [0, 1]))  # the recipe's 2 seeds unless overridden
    assert jobs["train"] == n_runs
    assert jobs["eval_run"] == n_runs
    assert jobs.get("eval_only", 0) == len(config.get("eval_only", []))
    assert jobs["prepare"] == 7  # DAPO-Math-17k + the six benchmarks (AIME24 doubles as validation)
    assert "warmstart" not in jobs


@pytest.mark.parametrize("name", ["default.yaml", "study.yaml"])
def test_default_config_job_graph(name: str, workdir: Path) -> None:
    args = () if name == "default.yaml" else ("--configfile", str(REPO / "configs" / name))
    jobs = planned_jobs(workdir, *args)  # no --configfile: configs/default.yaml
    config = yaml.safe_load((REPO / "configs" / name).read_text())
    seeds = config.get("seeds") or yaml.safe_load((REPO / "configs" / "default.yaml").read_text())["seeds"]
    assert jobs["train"] == len(config["methods"]) * len(seeds) == (9 if name == "default.yaml" else 30)
    assert jobs["eval_all"] == 1  # eval.jobs: one — the base row and every run with one engine
    assert not {"eval_run", "eval_only"} & set(jobs)
    assert jobs["warmstart"] == 1
    assert jobs["tree"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": ["grpo", "nonexistent_method"]}, "unknown method 'nonexistent_method' in 'methods'"),
        ({"data": {"train": "synth_train", "benchmarks": ["aime2099"]}}, r"unknown dataset\(s\) \['aime2099'\]"),
        ({"seeds": [0, 0]}, "seeds must be distinct"),
        ({"seeds": []}, "seeds"),
        ({"train": {"steps": 0}}, "steps"),
        ({"tree": "configs/tree/missing.yaml"}, "missing.yaml"),
    ],
)
def test_broken_config_fails_before_any_job(change: dict, message: str, workdir: Path) -> None:
    config = yaml.safe_load((REPO / "configs" / "smoke.yaml").read_text())
    for key, value in change.items():
        if isinstance(value, dict) and key == "train":
            config[key].update(value)
        else:
            config[key] = value
    path = workdir / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    out = snakemake(workdir, "--cores", "1", "--configfile", str(path))
    assert out.returncode != 0
    assert re.search(message, out.stderr), out.stderr[-2000:]
    assert not (workdir / "results").exists()

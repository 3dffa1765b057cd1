"""What the MLflow UI shows after a short real train + eval + report (issue 14): the experiment marked as model
training (the UI then opens on its runs table), method/seed/kind tags to group by, the headline metrics on
each run, evaluation and training runs linked both ways (and nested), the report's files as artifacts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from trainrun import experiment_yaml

from steer_bench.cli import main
from steer_bench.config.method import load_method
from steer_bench.experiment import load_experiment
from steer_bench.files import read_json, read_jsonl
from steer_bench.report import build_report
from steer_bench.tracking import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, PARENT_RUN_TAG, _client, search_runs
from steer_bench.train import train

pytestmark = pytest.mark.slow  # a real train + eval + report


def test_ui_facing_tags_metrics_links_and_artifacts(
    tmp_path: Path, model_dir: Path, data: dict[str, Path], mlflow_uri: str
) -> None:
    model = model_dir
    config = experiment_yaml(tmp_path, model, data, name="ui", steps=2, track=True,
                             validation={"every_n_steps": 1, "limit": 8, "n": 2})  # fmt: skip
    raw = yaml.safe_load(config.read_text())
    raw["data"]["validation"] = "synth_test"
    raw["eval"] = {"protocol": {"name": "ui", "temperature": 1.0, "top_p": 1.0, "max_new_tokens": 12,
                                "k": {"synth_test": 2}}, "engine": "hf", "checkpoint": "best"}  # fmt: skip
    config.write_text(yaml.safe_dump(raw))
    exp = load_experiment(config)
    done = train(exp.train_config(0), load_method("grpo"), exp.run_dir("grpo", 0))
    assert main(["eval", "--config", str(config), "--method", "grpo", "--seed", "0"]) == 0
    report = build_report(exp, uri=mlflow_uri)

    client = _client(mlflow_uri)
    experiment = client.get_experiment_by_name("ui")
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND == "custom_model_development"
    (tr,) = search_runs("ui", filter_string="tags.kind = 'train'", uri=mlflow_uri)
    (ev,) = search_runs("ui", filter_string="tags.kind = 'eval'", uri=mlflow_uri)
    (rep,) = search_runs("ui", filter_string="tags.kind = 'report'", uri=mlflow_uri)
    assert {k: tr.data.tags[k] for k in ("kind", "method", "seed")} == {"kind": "train", "method": "grpo", "seed": "0"}
    assert {k: ev.data.tags[k] for k in ("kind", "method", "seed")} == {"kind": "eval", "method": "grpo", "seed": "0"}
    # linked both ways; the UI nests the evaluation under its training run
    assert ev.data.tags["train_run_id"] == ev.data.tags[PARENT_RUN_TAG] == tr.info.run_id == done["mlflow_run_id"]
    assert tr.data.tags["eval_run_id"] == ev.info.run_id
    # headline metrics equal the files'
    last = read_jsonl(exp.run_dir("grpo", 0) / "metrics.jsonl")[-1]
    assert tr.data.metrics["headline/final_accuracy"] == pytest.approx(last["rollout/accuracy"])
    assert tr.data.metrics["headline/final_entropy"] == pytest.approx(last["rollout/entropy_mean"])
    assert tr.data.metrics["headline/best_step"] == done["best_step"] in (1, 2)
    assert tr.data.metrics["headline/best_val"] == pytest.approx(done["best_metric"])
    summary = read_json(exp.root / "eval" / "grpo" / "seed0" / "synth_test" / "summary.json")
    assert ev.data.metrics["headline/acc"] == pytest.approx(summary["metrics"]["acc"])
    assert ev.data.metrics["headline/acc_se"] == pytest.approx(summary["metrics"]["acc_se"])
    # the report's tables and figures are the report run's artifacts
    logged = {f.path for f in client.list_artifacts(rep.info.run_id)}
    assert {"report.md", "main_table.md", "main_table.csv", "main_table.tex", "figures"} <= logged
    figures = {f.path for f in client.list_artifacts(rep.info.run_id, "figures")}
    assert figures == {f"figures/{p.name}" for p in (report.out_dir / "figures").glob("*.png")} != set()

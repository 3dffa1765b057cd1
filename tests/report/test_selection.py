"""Checkpoint selection without self-grading: ``data.selection`` refused when it overlaps a reported benchmark (by
name, by normalized problem text), the views' eval jobs, and the report's "Checkpoint selection" section checked by
hand from fabricated evaluations (files and MLflow)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from steer_bench import files
from steer_bench.config import validate
from steer_bench.data.holdout import split_holdout
from steer_bench.errors import SelectionOverlapError, SteerBenchError
from steer_bench.experiment import ExperimentConfig, load_experiment
from steer_bench.experiment.jobs import trained_run_job, view_jobs
from steer_bench.files import write_json
from steer_bench.report import collect, selection
from steer_bench.tracking import Tracker

BENCHES = ["math500", "aime24"]
TRAIN = {"rollout": {"n": 4, "max_new_tokens": 16}, "optim": {"lr": 3e-5}, "steps": 4, "prompts_per_step": 8,
         "mini_batch_prompts": 4, "micro_batch_size": 8, "max_prompt_len": 32,
         "validation": {"every_n_steps": 2}}  # fmt: skip


def _config(tmp: Path, **data: Any) -> dict[str, Any]:
    return {
        "name": "sel", "results_dir": str(tmp / "results"), "model_path": "tiny/model",
        "data": {"train": "synth_train", "validation": "aime24", "selection": "aime25", "benchmarks": BENCHES} | data,
        "methods": ["grpo", "steer"], "seeds": [0, 1], "train": TRAIN,
        "eval": {"protocol": "greedy", "engine": "hf", "selection_views": True},
    }  # fmt: skip


def _write(tmp: Path, cfg: dict[str, Any]) -> Path:
    path = tmp / "sel.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _problems(tmp: Path, dataset: str, problems: list[str]) -> None:
    path = tmp / "results" / "sel" / "data" / f"{dataset}.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"problem_id": [f"{dataset}/{i}" for i in range(len(problems))], "problem": problems}).to_parquet(
        path
    )


# ---------------------------------------------------------------------------------------------- config
def test_selection_set_that_is_a_reported_benchmark_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(SelectionOverlapError, match=r"data.selection 'math500' is a reported benchmark"):
        load_experiment(_write(tmp_path, _config(tmp_path, selection="math500")))


def test_selection_set_sharing_a_problem_with_a_benchmark_is_refused_by_content(tmp_path: Path) -> None:
    _problems(tmp_path, "math500", ["What is 1 + 1?", "Find  the   Area of a unit circle."])
    _problems(tmp_path, "aime24", ["Compute 2^10."])
    _problems(tmp_path, "aime25", ["How many primes are below 10?", "find the area of a\nunit circle. "])
    with pytest.raises(SelectionOverlapError, match=r"shares 1 problem\(s\) with the reported benchmark 'math500'"):
        load_experiment(_write(tmp_path, _config(tmp_path)))
    # the overlapping problem is past selection_limit: the set actually used is disjoint
    exp = load_experiment(_write(tmp_path, _config(tmp_path, selection_limit=1)))
    cfg = exp.train_config(0)
    assert cfg.validation.selection_data == str(exp.data_path("aime25"))
    assert cfg.validation.selection_limit == 1
    assert cfg.validation.selection_metric == "sel/avg_at_k"


def test_held_out_training_slice_is_the_disjoint_set_and_is_checked_against_benchmarks(tmp_path: Path) -> None:
    train = [f"Compute {i} + {i}." for i in range(20)]
    _problems(tmp_path, "synth_train", train)
    _problems(tmp_path, "aime24", ["Compute 2^10."])
    _problems(tmp_path, "math500", ["What is 1 + 1?"])
    cfg = _config(tmp_path, selection=None, selection_holdout=5)
    exp = load_experiment(_write(tmp_path, cfg))
    assert exp.selection_views() == ["last", "best_disjoint"]
    assert exp.train_config(0).validation.selection_holdout == 5
    assert exp.data.disjoint_selection() == "5 held-out problems of `synth_train`"
    _, held_rows = split_holdout(pd.DataFrame({"problem": train}), 5, source="t")
    # a benchmark sharing a held-out problem (up to case and whitespace) is refused; one sharing a trained one is not
    # this check's business (the selection set is what must be disjoint)
    _problems(tmp_path, "math500", [held_rows["problem"].iloc[0].upper() + "  "])
    with pytest.raises(
        SelectionOverlapError, match=r"data.selection_holdout \(5 held-out problems of `synth_train`\)"
    ):
        load_experiment(_write(tmp_path, cfg))
    trained = next(p for p in train if p not in set(held_rows["problem"]))
    _problems(tmp_path, "math500", [trained])
    load_experiment(_write(tmp_path, cfg))
    with pytest.raises(SteerBenchError, match="set one disjoint selection set"):
        load_experiment(_write(tmp_path, _config(tmp_path, selection_holdout=5)))  # and data.selection aime25


def test_disjoint_selection_set_loads_and_names_its_views(tmp_path: Path) -> None:
    _problems(tmp_path, "math500", ["What is 1 + 1?"])
    _problems(tmp_path, "aime25", ["How many primes are below 10?"])  # aime24 not prepared yet: checked later
    exp = load_experiment(_write(tmp_path, _config(tmp_path)))
    assert exp.selection_views() == ["last", "best_disjoint"]  # the main view (best) keeps eval/<m>/seed<k>/
    assert "aime25" in exp.datasets()
    off = load_experiment(_write(tmp_path, _config(tmp_path) | {"eval": {"protocol": "greedy"}}))
    assert off.selection_views() == []


def test_view_jobs_evaluate_each_kept_checkpoint_into_its_own_folder(tmp_path: Path) -> None:
    exp = validate(ExperimentConfig, _config(tmp_path), source="test")
    run = exp.run_dir("grpo", 0)
    for name, step in (("best", 2), ("last", 4), ("best_disjoint", 3)):
        write_json(run / "checkpoints" / name / "state.json", {"step": step})
    write_json(run / "train.done", {"mlflow_run_id": "abc", "steps": 4})
    main = trained_run_job(exp, "grpo", 0)
    assert (main.out_dir, main.checkpoint, main.checkpoint_step, main.train_run_id) == (
        exp.eval_dir("grpo", 0),
        "best",
        2,
        "abc",
    )
    jobs = {j.checkpoint: j for j in view_jobs(exp, "grpo", 0)}
    assert set(jobs) == {"last", "best_disjoint"}
    d = jobs["best_disjoint"]
    assert d.model == str(run / "checkpoints" / "best_disjoint")
    assert d.checkpoint_step == 3
    assert d.out_dir == exp.eval_dir("grpo", 0) / "best_disjoint"
    assert d.train_run_id is None  # the training run's eval/* metrics stay the main view's
    assert jobs["last"].out_dir == exp.eval_dir("grpo", 0) / "last"
    assert jobs["last"].checkpoint_step == 4


# ---------------------------------------------------------------------------------------------- report
# (view, method, seed) -> accuracy on [math500, aime24]; steer seed 1 has no best view, no disjoint view at all.
ACC = {
    ("best", "grpo", 0): [0.60, 0.40],  # Avg 50
    ("best", "grpo", 1): [0.70, 0.30],  # 50
    ("last", "grpo", 0): [0.50, 0.30],  # 40
    ("last", "grpo", 1): [0.60, 0.20],  # 40
    ("best_disjoint", "grpo", 0): [0.56, 0.30],  # 43
    ("best_disjoint", "grpo", 1): [0.62, 0.20],  # 41
    ("best", "steer", 0): [0.80, 0.50],  # 65
    ("last", "steer", 0): [0.70, 0.30],  # 50
    ("last", "steer", 1): [0.60, 0.40],  # 50
}
# Hand-computed: Avg mean ± std (std of two = |a − b|/√2), and per-seed view − last.
EXPECTED = [
    "| GRPO | 50.0 ± 0.0 | 40.0 ± 0.0 | 42.0 ± 1.4 | +10.0 ± 0.0 | +2.0 ± 1.4 |",
    "| STEER | 65.0† | 50.0 ± 0.0 | — | +15.0† | — |",
]


def _fabricate(exp: ExperimentConfig, uri: str) -> None:
    for (view, method, seed), accs in ACC.items():
        tracker = Tracker(exp.name, uri=uri, tags={"kind": "eval", "row": method, "method": method, "seed": seed,
                                                   "checkpoint": view})  # fmt: skip
        tracker.log_metrics({f"eval/{b}/acc": a for b, a in zip(BENCHES, accs, strict=True)}, 0)
        tracker.finish("FINISHED")
        time.sleep(0.002)
        for b, a in zip(BENCHES, accs, strict=True):
            summary = {"benchmark": b, "metrics": {"acc": a}, "complete": True, "model": "m"}
            files.write_json(exp.view_eval_dir(method, seed, view) / b / "summary.json", summary)


@pytest.mark.slow
def test_checkpoint_selection_section_by_hand(tmp_path: Path) -> None:
    exp = validate(ExperimentConfig, _config(tmp_path), source="test")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _fabricate(exp, uri)
    from_files, from_mlflow = collect.from_files(exp), collect.from_mlflow(exp, uri)
    assert from_files.view_acc == pytest.approx(from_mlflow.view_acc)
    assert from_files.acc[("grpo", 0, "aime24")] == 0.40  # the main view (best) stays the main table's
    assert ("last", "grpo", 0, "aime24") in from_files.view_acc
    labels = {"grpo": "GRPO", "steer": "STEER"}
    text = "\n".join(selection.section(exp, from_files, labels))
    assert text == "\n".join(selection.section(exp, from_mlflow, labels))
    assert text.startswith("## Checkpoint selection")
    assert (
        "| Method | (a) best on `aime24` ‡ | (b) last | (c) best on `aime25` (disjoint) | (a) − (b) | (c) − (b) |"
        in text
    )
    for line in EXPECTED:
        assert line in text
    assert "The main table uses view (a)** (`eval.checkpoint: best`)" in text
    assert "‡ The validation set `aime24` is also a reported benchmark" in text


def test_checkpoint_selection_section_with_views_off(tmp_path: Path) -> None:
    cfg = _config(tmp_path, validation="aime25", selection=None) | {
        "eval": {"protocol": "greedy", "checkpoint": "last"}
    }
    exp = validate(ExperimentConfig, cfg, source="test")
    res = collect.Results(acc={("grpo", 0, b): a for b, a in zip(BENCHES, [0.5, 0.3], strict=True)})
    text = "\n".join(selection.section(exp, res, {"grpo": "GRPO", "steer": "STEER"}))
    assert "| GRPO | — | 40.0† | — | — | — |" in text  # the main view is last; nothing else was evaluated
    assert "The main table uses view (b)** (`eval.checkpoint: last`)" in text
    assert "‡" not in text
    assert "set `eval.selection_views: true`" in text

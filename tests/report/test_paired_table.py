"""The paired section with one seed (a paired bootstrap over problems read from samples.jsonl) and without runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from steer_bench.config import validate
from steer_bench.experiment import ExperimentConfig
from steer_bench.files import write_json, write_jsonl
from steer_bench.report import paired_table
from steer_bench.report.collect import Results, per_problem_accuracy

LABELS = {"grpo": "GRPO", "steer": "STEER"}
# (method, benchmark) -> problem id -> its samples' correctness (k = 2)
SAMPLES = {
    ("grpo", "synth_test"): {"p1": [1, 0], "p2": [0, 0]},
    ("steer", "synth_test"): {"p1": [1, 1], "p2": [1, 0]},
    ("grpo", "math500"): {"q1": [1, 1], "q2": [1, 1], "q3": [0, 0]},
    ("steer", "math500"): {"q1": [1, 1], "q2": [0, 0], "q3": [1, 1], "q4": [1, 1]},  # q4: not matched, left out
}
PRIOR_LINE = (
    "Seeds needed to detect a gap on the Avg at 80% power (paired t-test, two-sided α = 0.05): 1 point: 9; "
    "2 points: 4; 4 points: 3 (prior: Parkdev22222/entropy_collapse, paired-difference SD ≈ 0.9 points at 1.5B)."
)


def _exp(
    tmp_path: Path, seeds: tuple[int, ...] = (0,), benchmarks: tuple[str, ...] = ("synth_test", "math500")
) -> ExperimentConfig:
    data = {
        "name": "one", "results_dir": str(tmp_path / "results"), "model_path": "tiny/model",
        "data": {"train": "synth_train", "benchmarks": list(benchmarks)},
        "methods": ["grpo", "steer"], "seeds": list(seeds), "eval": {"protocol": "greedy", "engine": "hf"},
        "train": {"rollout": {"n": 4, "max_new_tokens": 16}, "optim": {"lr": 3e-5}, "steps": 4,
                  "prompts_per_step": 8, "mini_batch_prompts": 4, "micro_batch_size": 8, "max_prompt_len": 32},
    }  # fmt: skip
    return validate(ExperimentConfig, data, source="test")


def _write(exp: ExperimentConfig) -> None:
    for (method, bench), problems in SAMPLES.items():
        folder = exp.eval_dir(method, 0) / bench
        rows = [{"problem_id": pid, "sample": i, "correct": bool(c)} for pid, cs in problems.items()
                for i, c in enumerate(cs)]  # fmt: skip
        write_jsonl(folder / "samples.jsonl", rows)
        write_json(folder / "summary.json", {"complete": True})


def test_per_problem_accuracy(tmp_path: Path) -> None:
    exp = _exp(tmp_path)
    assert per_problem_accuracy(exp, "steer", 0, "synth_test") is None  # nothing evaluated yet
    _write(exp)
    assert per_problem_accuracy(exp, "steer", 0, "synth_test") == {"p1": 1.0, "p2": 0.5}
    write_json(exp.eval_dir("grpo", 0) / "math500" / "summary.json", {"complete": False})  # interrupted: missing
    assert per_problem_accuracy(exp, "grpo", 0, "math500") is None


def test_one_seed_paired_bootstrap(tmp_path: Path) -> None:
    exp = _exp(tmp_path)
    _write(exp)
    lines = paired_table.section(exp, Results(), LABELS, baseline="grpo")
    assert lines[0] == "### Paired against `grpo` (one seed: paired bootstrap over problems)"
    assert lines[2] == "| Method | Δ MATH500 (points) | Δ Synthetic (points) | Δ Avg (points) |"  # the paper's order
    math500, synth, avg = (c.strip() for c in lines[4].strip("|").split("|")[1:])
    # Synthetic: per-problem accuracies STEER (1, 0.5), GRPO (0.5, 0): both +50 points, no spread; p = 0 (every
    # resample > 0), starred (the only method: Holm leaves it as is)
    assert synth == "+50.0 ± 0.0 [+50.0, +50.0] p <0.001* (2 problems)"
    # MATH500 on the 3 matched problems: (0, −100, +100): mean 0; exact bootstrap SE √(20000/3 / 3) = 47.14
    assert math500.startswith("+0.0 ± ")
    assert math500.endswith("(3 problems)")
    assert float(math500.split(" ± ")[1].split(" ")[0]) == pytest.approx(math.sqrt(20000 / 9), rel=0.03)
    # Avg: (50 + 0) / 2 = 25, SE 47.14 / 2 (Synthetic has no spread)
    assert avg.startswith("+25.0 ± ")
    assert avg.endswith("(5 problems)")
    assert float(avg.split(" ± ")[1].split(" ")[0]) == pytest.approx(math.sqrt(20000 / 9) / 2, rel=0.03)
    note = lines[6]
    assert "paired bootstrap over problems, 10000 resamples, RNG seed 0" in note
    assert "Holm's step-down correction" in note
    assert lines[8] == PRIOR_LINE  # one seed: no spread over seeds measured
    assert paired_table.section(exp, Results(), LABELS, baseline="grpo") == lines  # deterministic


def test_no_runs_yet_gives_the_prior(tmp_path: Path) -> None:
    lines = paired_table.section(_exp(tmp_path), Results(), LABELS, baseline="grpo")
    assert lines[2] == "No paired runs yet."
    assert lines[4] == PRIOR_LINE
    assert paired_table.section(_exp(tmp_path), Results(), LABELS, baseline="opo") == []


def test_one_benchmark_has_only_the_avg_column(tmp_path: Path) -> None:
    exp = _exp(tmp_path, seeds=(0, 1), benchmarks=("math500",))
    # STEER − GRPO on math500 per seed: +10, +30 points: mean 20, SE 10, s_d = 10·√2 = 14.14
    acc = {("grpo", 0, "math500"): 0.5, ("grpo", 1, "math500"): 0.5, ("steer", 0, "math500"): 0.6,
           ("steer", 1, "math500"): 0.8}  # fmt: skip
    lines = paired_table.section(exp, Results(acc=acc), LABELS, baseline="grpo")
    assert lines[2] == "| Method | Δ Avg (points) |"
    assert lines[4].startswith("| STEER | +20.0 ± 10.0 [")
    assert "(s_d = 14.14 points, the paired differences' SD over seeds pooled over the methods)." in lines[8]

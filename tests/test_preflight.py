"""steer-bench preflight: the shrunk launch, the extrapolation worked by hand, the checks; the command end to end
(one process, the hf engine). Under 2 ranks with vLLM it runs as the first job of tests/system/test_rehearsal.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny import tiny_model_dir
from trainrun import experiment_yaml

from steer_bench import cli
from steer_bench.experiment import load_experiment
from steer_bench.preflight import Measured, checks, extrapolate, shrink

REPO = Path(__file__).resolve().parents[1]


def test_the_shrunk_launch_gives_every_rank_whole_micro_batches() -> None:
    exp = load_experiment(REPO / "configs" / "paper" / "table3_7b.yaml")
    cfg = exp.train_config(0)
    small = exp.train_config(0, shrink(cfg, 8))
    assert (small.prompts_per_step, small.mini_batch_prompts) == (8, 8)  # 8 prompts × 8 = one micro-batch of 8 each
    small.check_world(8)
    odd = exp.train_config(0, ["rollout.n=4"])  # a micro-batch of 8 needs 2 prompts × 4 per rank
    assert exp.train_config(0, ["rollout.n=4", *shrink(odd, 2)]).prompts_per_step == 4
    assert (small.rollout.ignore_eos, small.steps, small.save_every, small.validation.limit) == (True, 2, 1, 2)
    assert (small.micro_batch_size, small.max_prompt_len, small.rollout.max_new_tokens) == (8, 1024, 3072)


def _measured(exp, checkpoint_s: float = 30.0, peak_mb: float = 1000.0) -> Measured:
    phase = {"count": 1, "seconds_mean": 1.0, "seconds_max": 1.0, "peak_mb": peak_mb, "torch_peak_mb": 0.0}
    phases = {name: dict(phase) for name in ("load", "engine_start", "collect", "update", "validation")}
    phases["load"]["seconds_max"], phases["engine_start"]["seconds_max"] = 100.0, 60.0
    phases["validation"]["seconds_max"] = 20.0
    phases["checkpoint"] = phase | {"seconds_max": checkpoint_s}
    step = {"time/rollout": 10.0, "time/grading": 1.0, "time/old_logprobs": 2.0, "time/update": 3.0}
    small = exp.train_config(0, shrink(exp.train_config(0), 8))
    sizes = {"last": 10**9, "best": 10**8}
    return Measured(small, [step, step], [phases] * 8, {"engine_full_length_seqs": 100}, sizes, 30)  # AIME24: 30


def test_the_extrapolation_worked_by_hand() -> None:
    """table3_7b on 8 ranks, two TP-4 engines: a step's 4,096 sequences are 2,048 per engine, 21 waves of the 100 the
    engine holds, against the measured 1 wave (32 per engine); rows per rank 512/8 = 64 times the shrunk launch's."""
    exp = load_experiment(REPO / "configs" / "paper" / "table3_7b.yaml")
    plan = extrapolate(exp, _measured(exp), world=8, nodes=1)
    assert plan["per_step_s"] == {"rollout": 210.0, "grading": 64.0, "old_logprobs": 128.0, "update": 192.0}
    assert plan["step_s"] == 594.0
    # AIME24's 30 problems × 32 samples = 960 per engine: 10 waves, against 1 for the measured 2 × 32
    assert plan["validation_s"] == 200.0
    # start-up 160 s, 200 steps, 20 validations, 20 saves of last + 20 of best at 30 s
    assert plan["run_hours"] == pytest.approx((160 + 200 * 594 + 20 * 200 + 40 * 30) / 3600)
    assert plan["runs"] == 22
    assert plan["table_node_hours"] == pytest.approx(22 * plan["run_hours"])
    disk = (plan["disk_run_steady_gb"], plan["disk_run_peak_gb"], plan["disk_table_gb"])
    assert disk == pytest.approx((1.1, 2.1, 24.2))


def test_the_checks_fail_what_does_not_fit(tmp_path: Path) -> None:
    exp = load_experiment(REPO / "configs" / "paper" / "table3_7b.yaml")  # collective_timeout_s 3600
    plan = extrapolate(exp, _measured(exp), world=8, nodes=1)
    verdicts = {name: ok for name, ok, _ in checks(exp, _measured(exp, checkpoint_s=2000.0), plan, tmp_path)}
    assert verdicts["timeout"] is False  # a 2000 s save in a 3600 s timeout: less than the 2× margin
    assert verdicts["memory"] is True
    assert verdicts["disk"] is True
    huge = _measured(exp, peak_mb=10**9)
    assert {name: ok for name, ok, _ in checks(exp, huge, plan, tmp_path)}["memory"] is False


@pytest.mark.slow
def test_preflight_end_to_end_in_one_process(tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    from steer_bench.data.prepare import prepare_dataset

    data = {"synth_train": tmp_path / "synth_train.parquet", "synth_test": tmp_path / "synth_test.parquet"}
    prepare_dataset("synth_train", data["synth_train"], limit=40, levels=[1], check_golds=False)
    prepare_dataset("synth_test", data["synth_test"], limit=8, levels=[1], check_golds=False)
    validation = {"every_n_steps": 10, "n": 2}
    config = experiment_yaml(tmp_path, tiny_model_dir(tmp_path_factory), data, name="pf", steps=50,
                             validation=validation)  # fmt: skip
    raw = config.read_text().replace("benchmarks:", "validation: synth_test\n  benchmarks:")
    config.write_text(raw)
    assert cli.main(["preflight", "--config", str(config)]) == 0
    out = tmp_path / "results" / "pf" / "preflight"
    record = json.loads((out / "preflight.json").read_text())
    assert [c["passed"] for c in record["checks"]] == [True, True, True]
    phases = record["phases"][0]
    assert {"load", "engine_start", "collect", "update", "validation", "checkpoint", "resume"} <= set(phases)
    assert phases["checkpoint"]["count"] == 3  # last after steps 1 and 2, best at step 2
    assert phases["resume"]["count"] == 1  # run B resumed from run A's checkpoint
    assert not (out / "run").exists()  # its checkpoints are as large as the real ones: only the numbers stay
    steps = record["steps"]
    assert [r["step"] for r in steps] == [1, 2]
    assert all(r["rollout/truncation_rate"] == 1.0 for r in steps)  # every response forced to the maximum
    assert "| timeout | pass |" in (out / "preflight.md").read_text()

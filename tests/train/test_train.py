"""The RL trainer on the real tiny model: every method preset, validation and best checkpoint, errors,
kill-and-resume with a real signal, and two data-parallel CPU ranks under `accelerate launch`."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from trainrun import deterministic, experiment_yaml, make_cfg
from transformers import AutoModelForCausalLM

from steer_bench.config.method import list_methods, load_method
from steer_bench.data import load_prepared
from steer_bench.data.holdout import split_holdout
from steer_bench.errors import SteerBenchError
from steer_bench.files import read_json, read_jsonl
from steer_bench.tracking import metric_history, search_runs
from steer_bench.train import prompt_order, train

REPO = Path(__file__).resolve().parents[2]
# Keys every step must log, whatever the method.
CORE_KEYS = {
    "rollout/reward_mean", "rollout/accuracy", "rollout/entropy_mean", "rollout/entropy_p50", "rollout/surprisal_mean",
    "rollout/response_len_mean", "rollout/truncation_rate", "rollout/all_equal_groups", "loss/clipfrac_high",
    "loss/clipfrac_low", "loss/approx_kl", "train/grad_norm", "time/rollout", "time/update", "time/step",
}  # fmt: skip


def finite_metrics(run_dir: Path) -> list[dict[str, float]]:
    rows = read_jsonl(run_dir / "metrics.jsonl")
    for row in rows:
        bad = {k: v for k, v in row.items() if not math.isfinite(v)}
        assert not bad, f"non-finite metrics at step {row['step']}: {bad}"
    return rows


@pytest.mark.slow
@pytest.mark.parametrize("name", list_methods())
def test_every_method_trains(name: str, model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    method = load_method(name)
    summary = train(make_cfg(model_dir, data), method, tmp_path)
    rows = finite_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2]
    for row in rows:
        assert row.keys() >= CORE_KEYS, CORE_KEYS - row.keys()
    if method.loss.name == "steer":
        assert {"steer/lambda_mean", "steer/lambda_min", "steer/omega_abs_max"} <= rows[0].keys()
    assert summary["steps"] == 2
    assert (tmp_path / "train.done").is_file()
    assert (tmp_path / "checkpoints" / "last" / "model.safetensors").is_file()
    dump = read_jsonl(tmp_path / "rollouts" / "step_000001.jsonl")
    assert len(dump) == 4 * 4
    assert {"problem_id", "response", "correct", "score", "entropy_mean"} <= dump[0].keys()


@pytest.mark.slow
def test_mlflow_mirrors_metrics_file_and_validation_selects_best(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, mlflow_uri: str
) -> None:
    cfg = make_cfg(model_dir, data, track=True, steps=3, validation={
        "every_n_steps": 1, "data": str(data["synth_test"]), "limit": 8, "n": 2})  # fmt: skip
    summary = train(cfg, load_method("grpo"), tmp_path)
    rows = finite_metrics(tmp_path)
    (run,) = search_runs("test")
    assert run.info.status == "FINISHED"
    assert run.data.tags["method"] == "grpo"
    assert run.data.tags["seed"] == "0"
    assert run.data.params["config.optim.lr"] == "0.001"
    for key in ("rollout/entropy_mean", "val/avg_at_k", "loss/clipfrac_low"):
        assert metric_history(run.info.run_id, key) == [(r["step"], pytest.approx(r[key])) for r in rows]
    vals = [r["val/avg_at_k"] for r in rows]
    best_step = 1 + max(range(3), key=lambda i: (vals[i], -i))  # first step reaching the max
    assert summary["best_step"] == best_step
    assert summary["best_metric"] == pytest.approx(max(vals))
    assert read_json(tmp_path / "checkpoints" / "best" / "state.json")["step"] == best_step


@pytest.mark.slow
def test_disjoint_selection_set_keeps_best_disjoint_selected_on_its_own_metric(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """validation.selection_data: validated every step as sel/*; checkpoints/best_disjoint is the first step reaching
    the max of sel/avg_at_k, checkpoints/best still that of val/avg_at_k."""
    cfg = make_cfg(model_dir, data, steps=3, validation={
        "every_n_steps": 1, "data": str(data["synth_test"]), "limit": 8, "n": 2,
        "selection_data": str(data["synth_train"]), "selection_limit": 6})  # fmt: skip
    summary = train(cfg, load_method("grpo"), tmp_path)
    rows = finite_metrics(tmp_path)
    assert [r["step"] for r in rows] == [1, 2, 3]
    sel, val = [r["sel/avg_at_k"] for r in rows], [r["val/avg_at_k"] for r in rows]
    assert {"sel/pass_at_k", "sel/truncation_rate"} <= rows[0].keys()
    first_max = lambda xs: 1 + max(range(3), key=lambda i: (xs[i], -i))  # noqa: E731
    state = read_json(tmp_path / "checkpoints" / "best_disjoint" / "state.json")
    assert state["step"] == summary["best_disjoint_step"] == first_max(sel)
    assert state["best_disjoint_metric"] == summary["best_disjoint_metric"] == pytest.approx(max(sel))
    assert (
        read_json(tmp_path / "checkpoints" / "best" / "state.json")["step"] == summary["best_step"] == first_max(val)
    )
    assert (tmp_path / "checkpoints" / "best_disjoint" / "model.safetensors").is_file()


@pytest.mark.slow
def test_held_out_training_slice_is_never_trained_on_and_selects_best_disjoint(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """validation.selection_holdout: 8 of the first 20 training problems are held out; 3 steps × 4 prompts draw the
    other 12 exactly once (one epoch), none of the 8, which are validated as sel/* and select best_disjoint."""
    cfg = make_cfg(model_dir, data, steps=3, data__limit=20, validation={
        "every_n_steps": 1, "data": str(data["synth_test"]), "limit": 4, "n": 2, "selection_holdout": 8})  # fmt: skip
    summary = train(cfg, load_method("grpo"), tmp_path)
    _, held = split_holdout(load_prepared(data["synth_train"]).head(20), 8, source="t")
    trained = {r["problem_id"] for s in (1, 2, 3) for r in read_jsonl(tmp_path / "rollouts" / f"step_{s:06d}.jsonl")}
    assert len(trained) == 12
    assert not trained & set(held["problem_id"])
    rows = finite_metrics(tmp_path)
    assert all("sel/avg_at_k" in r for r in rows)
    assert (
        read_json(tmp_path / "checkpoints" / "best_disjoint" / "state.json")["step"] == summary["best_disjoint_step"]
    )


def test_prompt_order_covers_each_epoch_once() -> None:
    order = [i for step in range(1, 6) for i in prompt_order(10, 3, step, 4)]  # 20 draws = 2 epochs
    assert sorted(order[:10]) == list(range(10))
    assert sorted(order[10:]) == list(range(10))
    assert order != [i for step in range(1, 6) for i in prompt_order(10, 4, step, 4)]  # the seed matters


def test_config_errors_name_the_culprit(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(SteerBenchError, match=r"rollout.n must be ≥ 2"):
        train(make_cfg(model_dir, data, rollout__n=1, micro_batch_size=2), load_method("grpo"), tmp_path)
    with pytest.raises(SteerBenchError, match=r"exceeds the context .* \(128 tokens\)"):
        train(make_cfg(model_dir, data, rollout__max_new_tokens=100), load_method("w_reinforce"), tmp_path)
    with pytest.raises(SteerBenchError, match=r"longer than max_prompt_len=5 .*synth_train/"):
        train(make_cfg(model_dir, data, max_prompt_len=5), load_method("grpo"), tmp_path)
    with pytest.raises(SteerBenchError, match=r"mini_batch_prompts \(3\) must divide"):
        make_cfg(model_dir, data, mini_batch_prompts=3)
    with pytest.raises(SteerBenchError, match="cannot load model"):
        train(make_cfg(tmp_path / "missing", data), load_method("grpo"), tmp_path)
    assert not (tmp_path / "train.done").exists()


def _cli(config: Path, out: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    cmd = [sys.executable, "-m", "steer_bench", "train", "--config", str(config), "--method", "grpo", "--seed", "0",
           "--out", str(out)]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow
def test_killed_run_resumes_and_matches_uninterrupted(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    config = experiment_yaml(tmp_path, model_dir, data, name="resume", steps=6)
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    assert _cli(config, ref).wait(timeout=300) == 0
    proc = _cli(config, killed)
    deadline = time.time() + 300
    # Kill it once step 3 is logged: the step-2 checkpoint exists, step 3's work is lost and must be redone.
    while time.time() < deadline and len(read_jsonl(killed / "metrics.jsonl") if (killed / "metrics.jsonl").exists()
                                         else []) < 3:  # fmt: skip
        assert proc.poll() is None, "the run ended before it could be killed"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (killed / "train.done").exists()
    assert read_json(killed / "checkpoints" / "last" / "state.json")["step"] in (2, 4)
    assert _cli(config, killed).wait(timeout=300) == 0
    got, want = read_jsonl(killed / "metrics.jsonl"), read_jsonl(ref / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, 7))
    assert deterministic(got) == deterministic(want)


@pytest.mark.slow
@pytest.mark.parametrize("sets", [[], ["--set", "train.batch_order=release", "--set", "train.loss_scale=release"]],
                         ids=["grouped", "release"])  # fmt: skip
def test_two_cpu_ranks_keep_parameters_identical(
    sets: list[str], model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    config = experiment_yaml(tmp_path, model_dir, data, name="resume", steps=2)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "steer_bench", "train",
           "--config", str(config), "--method", "steer", "--seed", "0", "--out", str(tmp_path / "ddp"),
           "--set", "method.loss.params.scope=mini", *sets]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads((tmp_path / "ddp" / "train.done").read_text())
    first, second = done["param_checksums"]
    assert first == second
    start = AutoModelForCausalLM.from_pretrained(model_dir)
    assert first != pytest.approx(sum(float(p.abs().sum()) for p in start.parameters()), rel=1e-9)  # it trained
    rows = finite_metrics(tmp_path / "ddp")
    assert len(rows) == 2
    if sets:  # the release's order: the ranks' token counts differ by at most one sequence (prompt + response)
        assert all(r["batch/update_tokens_max"] - r["batch/update_tokens_min"] <= 40 + 20 for r in rows)


@pytest.mark.slow
def test_release_options_drop_long_prompts_grade_and_select_as_the_release(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """Issue 11 items 1-3, 8: release_strict reward, release_both validation (agreement logged), select_after,
    on_long_prompt: drop (the dropped count in every step's metrics)."""
    import pandas as pd
    from transformers import AutoTokenizer

    from steer_bench.rollout.model import render_prompt

    tok = AutoTokenizer.from_pretrained(model_dir)
    lengths = sorted(len(render_prompt(tok, m)) for m in pd.read_parquet(data["synth_train"])["prompt"])
    limit = lengths[len(lengths) // 2]  # about half the prompts are longer
    too_long = sum(n > limit for n in lengths)
    assert 0 < too_long < len(lengths)
    cfg = make_cfg(model_dir, data, steps=3, max_prompt_len=limit, on_long_prompt="drop",
                   reward={"grader": "release_strict", "correct": 1.0, "incorrect": -1.0},
                   validation={"every_n_steps": 1, "data": str(data["synth_test"]), "limit": 4, "n": 2,
                               "grader": "release_both", "select_after": 2})  # fmt: skip
    summary = train(cfg, load_method("grpo"), tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["data/prompts_dropped"] for r in rows] == [too_long] * 3
    val_keys = {"val/avg_at_k", "val/math_verify_avg_at_k", "val/strict_avg_at_k", "val/grader_agreement"}
    assert all(val_keys <= r.keys() for r in rows)
    assert all(r["rollout/reward_mean"] >= -1.0 for r in rows)
    vals = {r["step"]: r["val/avg_at_k"] for r in rows}
    best = max((2, 3), key=lambda s: (vals[s], -s))  # step 1 is before select_after
    assert summary["best_step"] == best
    assert read_json(tmp_path / "checkpoints" / "best" / "state.json")["step"] == best
    with pytest.raises(SteerBenchError, match="every prompt is longer"):
        train(make_cfg(model_dir, data, max_prompt_len=1, on_long_prompt="drop"), load_method("grpo"), tmp_path / "x")


@pytest.mark.slow
def test_batch_order_and_loss_scale_in_the_loop(model_dir: Path, data: dict[str, Path], tmp_path: Path) -> None:
    """Issue 11 items 4-5 on one process: the release's order is the grouped one (verl's single part), and its
    loss scaling changes the update when micro-batches (here one prompt's 4 responses) differ in length."""
    grouped = train(make_cfg(model_dir, data), load_method("steer"), tmp_path / "grouped")
    release = train(make_cfg(model_dir, data, batch_order="release"), load_method("steer"), tmp_path / "release")
    assert release["param_checksums"] == grouped["param_checksums"]
    assert deterministic(read_jsonl(tmp_path / "release" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "grouped" / "metrics.jsonl"))  # fmt: skip
    # The entropy bonus gives every micro-batch a gradient (GRPO's alone often leaves one group with signal per
    # mini-batch, and Adam does not see a constant scale): their relative weights now differ.
    ent = load_method("entropy_loss")
    ours = train(make_cfg(model_dir, data), ent, tmp_path / "ours")
    scaled = train(make_cfg(model_dir, data, loss_scale="release"), ent, tmp_path / "scaled")
    assert scaled["param_checksums"] != ours["param_checksums"]


@pytest.mark.slow
def test_old_logprobs_from_the_rollout_equal_the_recomputed_ones(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """``old_logprobs: rollout`` takes π_old from the hf engine's scores instead of a second forward pass: the
    same rollouts (same seeds), the same π_old statistics up to float32 rounding of the KV-cached forward, and
    — at temperature 0.7, where the scores are logits/τ — still the policy's own values. Only with hf, top_p 1
    and no autocast."""
    for temperature in (1.0, 0.7):
        rows = {}
        for mode in ("recompute", "rollout"):
            out = tmp_path / f"{mode}-{temperature}"
            # one step: a later step's samples could flip on a 1e-6 change of the weights
            cfg = make_cfg(model_dir, data, old_logprobs=mode, rollout__temperature=temperature, steps=1)
            train(cfg, load_method("steer"), out)  # STEER: Ω reads π_old's probabilities and entropy
            rows[mode] = read_jsonl(out / "metrics.jsonl")
        for ours, ref in zip(rows["rollout"], rows["recompute"], strict=True):
            assert ours["rollout/response_len_mean"] == ref["rollout/response_len_mean"]  # the same samples
            # per-token log-probs agree to ~1e-5 (measured 5e-6–8e-6 on the miniature); means of O(1) values
            # over ~100 tokens carry that error at most
            for key in ("rollout/entropy_mean", "loss/approx_kl", "steer/omega_abs_max"):
                assert ours[key] == pytest.approx(ref[key], rel=1e-3, abs=1e-4), key
    for bad in ({"rollout__top_p": 0.9}, {"rollout__engine": "vllm"}, {"mixed_precision": "bf16", "shard": "fsdp2"}):
        with pytest.raises(SteerBenchError, match=r"old_logprobs: rollout needs rollout\.engine: hf"):
            make_cfg(model_dir, data, old_logprobs="rollout", **bad)

"""The training loop drives the library's registries (no second implementation) with paired seeds."""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from steer_bench.algos import Method, TokenBatch, Totals, logprobs_and_entropy
from steer_bench.config import validate
from steer_bench.config.method import list_methods, load_method
from steer_bench.tree.config import SettingConfig
from steer_bench.tree.loop import RunLog, rollout, train_run, update
from steer_bench.tree.policy import TabularPolicy
from steer_bench.tree.summary import crossing
from steer_bench.tree.task import make_task

TINY = {
    "description": "tiny",
    "task": {
        "problems": 6, "depth": 3, "branching": 3, "state": "prev", "share": 1,
        "verifier": {"kind": "mod", "modulus": 2},
    },
    "train": {
        "steps": 3, "problems_per_step": 3, "samples_per_problem": 4, "minibatches": 2, "shuffle": True,
        "lr": 5.0, "init_std": 1.0, "eval_every": 1, "analysis_every": 2, "pass_k": [1, 4],
    },
    "matched_accuracy": [0.5],
}  # fmt: skip


def tiny_setting(**train: object) -> SettingConfig:
    return validate(SettingConfig, {**TINY, "train": {**TINY["train"], **train}}, source="test")


def _counting(fn, calls: list[str], name: str):
    @functools.wraps(fn)  # keeps the signature the registries introspect
    def wrapper(*args, **kwargs):
        calls.append(name)
        return fn(*args, **kwargs)

    return wrapper


@pytest.mark.parametrize("preset", list_methods())
def test_every_preset_runs_through_the_library_registries(preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    method = load_method(preset)
    calls: list[str] = []
    monkeypatch.setattr(Method, "advantages", _counting(Method.advantages, calls, "adv"))
    monkeypatch.setattr(Method, "loss", _counting(Method.loss, calls, "loss"))
    # no probes here: their vanilla step calls Method.loss too
    log = train_run(tiny_setting(analysis_every=0), method.resolve(), lr=5.0, seed=0, keep_points=False, log=RunLog())
    steps = TINY["train"]["steps"]
    assert calls.count("adv") == steps
    assert calls.count("loss") == steps * TINY["train"]["minibatches"]
    assert [r["step"] for r in log.rows] == list(range(steps + 1))
    assert all(torch.isfinite(torch.tensor(r["exact/entropy"])) for r in log.rows)


@pytest.mark.parametrize("preset", ["grpo", "steer", "clip_cov", "fork_tokens", "entropy_loss"])
def test_one_update_is_exactly_an_sgd_step_on_the_library_loss(preset: str) -> None:
    """Plumbing only: the loop's step equals a hand-made SGD step on ``Method.loss`` of the same mini-batch."""
    method = load_method(preset)
    task = make_task(tiny_setting().task, 0)
    policy = TabularPolicy(task, init_std=1.0, seed=0)
    problems = torch.arange(3).repeat_interleave(4)
    batch = rollout(policy, task, problems, torch.Generator().manual_seed(0))
    mask = torch.ones_like(batch.old_logp)
    m = method.resolve()
    adv = m.advantages(batch.scores, problems, mask, old_entropy=batch.old_entropy)
    table = policy.table.detach().clone().requires_grad_(True)
    logp, ent = logprobs_and_entropy(table[batch.state_ids], batch.responses, temperature=1.0)
    tokens = TokenBatch(
        logp, batch.old_logp, adv, mask.bool(), ent, batch.old_entropy, torch.Generator().manual_seed(5)
    )
    loss, _ = m.loss(tokens, Totals(max_response_len=task.D), m.mini_batch_stats(tokens))
    (grad,) = torch.autograd.grad(loss, table)
    metrics = update(policy, 3.0, batch, adv, method.resolve(), (torch.arange(12),), torch.Generator().manual_seed(5))
    assert torch.allclose(policy.table.detach(), table.detach() - 3.0 * grad, atol=1e-12, rtol=0)
    assert len(metrics) == 1
    assert metrics[0]["loss/pg"].item() == pytest.approx(loss.item() + float(metrics[0].get("loss/entropy_bonus", 0)))


@pytest.mark.slow
def test_seeds_are_paired_across_methods() -> None:
    """Same seed: same task, initial table, first rollout; the methods only diverge through their updates."""
    setting = tiny_setting()
    a = train_run(setting, load_method("grpo").resolve(), lr=5.0, seed=3, keep_points=False, log=RunLog())
    b = train_run(setting, load_method("steer").resolve(), lr=5.0, seed=3, keep_points=False, log=RunLog())
    c = train_run(setting, load_method("grpo").resolve(), lr=5.0, seed=4, keep_points=False, log=RunLog())
    for key in ("exact/accuracy", "exact/entropy", "rollout/accuracy", "rollout/entropy"):
        assert a.rows[0][key] == b.rows[0][key]
    assert a.rows[0]["exact/entropy"] != c.rows[0]["exact/entropy"]
    assert a.rows[-1]["exact/entropy"] != b.rows[-1]["exact/entropy"]


@pytest.mark.slow
def test_grpo_learns_and_collapses_entropy_on_the_dense_task() -> None:
    setting = tiny_setting(steps=25, lr=20.0, analysis_every=0)
    log = train_run(setting, load_method("grpo").resolve(), lr=20.0, seed=0, keep_points=False, log=RunLog())
    first, last = log.rows[0], log.rows[-1]
    assert last["exact/accuracy"] > first["exact/accuracy"] + 0.2
    assert last["exact/entropy"] < 0.6 * first["exact/entropy"]


def test_crossing_interpolates_the_first_time_accuracy_reaches_a_level() -> None:
    import numpy as np

    acc, ent = np.array([0.1, 0.3, 0.7, 0.6, 0.9]), np.array([1.0, 0.8, 0.4, 0.5, 0.1])
    assert crossing(acc, ent, 0.5) == pytest.approx((1.5, 0.6))
    assert crossing(acc, ent, 0.05) == (0.0, 1.0)
    idx, value = crossing(acc, ent, 0.95)
    assert idx != idx
    assert value != value


def test_stare_gates_every_mini_batch_on_the_step_batch_entropy() -> None:
    """Two mini-batches with π_old entropy 0.1 and 1.0 (mean 0.55 < H_tgt 0.6): the release's step gate is on
    for both; a per-mini-batch gate would be off on the second (1.0 ≥ 0.6)."""
    method = load_method("stare", ["loss.params.target_entropy=0.6"])
    task = make_task(tiny_setting().task, 0)
    policy = TabularPolicy(task, init_std=1.0, seed=0)
    problems = torch.arange(3).repeat_interleave(4)
    batch = rollout(policy, task, problems, torch.Generator().manual_seed(0))
    ent = torch.full_like(batch.old_entropy, 0.1)
    ent[6:] = 1.0
    batch = dataclasses.replace(batch, old_entropy=ent)
    adv = method.resolve().advantages(batch.scores, problems, torch.ones_like(ent), old_entropy=ent)
    metrics = update(
        policy, 3.0, batch, adv, method.resolve(), torch.arange(12).chunk(2), torch.Generator().manual_seed(5)
    )
    assert [float(c["stare/gate_on"]) for c in metrics] == [1.0, 1.0]
    assert [float(c["stare/gate_entropy"]) for c in metrics] == pytest.approx([0.55, 0.55])


def test_controllers_step_once_per_training_step_on_the_tree() -> None:
    """The schedule's β_k follows the step (k = 0, 1, 2 of N = 3) and EntroPIC's α follows its PI law from each
    step's mean π_old entropy (issue 27)."""
    log = train_run(tiny_setting(analysis_every=0), load_method("entropy_loss_linear").resolve(), lr=5.0, seed=0,
                    keep_points=False, log=RunLog())  # fmt: skip
    coefs = [r["loss/entropy_coef"] for r in log.rows[:-1]]
    assert coefs == pytest.approx([0.001, 0.001 * 2 / 3, 0.001 / 3], rel=1e-6)
    preset = load_method("entropic", ["loss.entropic.target=0.5", "loss.entropic.kp=0.5", "loss.entropic.ki=0.25"])
    log = train_run(tiny_setting(analysis_every=0), preset.resolve(), lr=5.0, seed=0, keep_points=False, log=RunLog())
    integral, want = 0.0, []
    for row in log.rows[:-1]:
        err = row["rollout/entropy"] - 0.5
        want.append(min(max(0.5 * err + 0.25 * integral, -1.0), 1.0))
        integral += err
    assert [r["loss/entropic_alpha"] for r in log.rows[:-1]] == pytest.approx(want, rel=1e-5, abs=1e-7)

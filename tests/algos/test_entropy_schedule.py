"""Entropy-coefficient schedules (``loss.entropy_schedule``): the values at given steps by hand, the bonus they
set with masks and padding, the constant preset unchanged, and an exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.entropy_control import EntropySchedule
from steer_bench.config.method import load_method
from steer_bench.files import read_jsonl


def test_values_at_given_steps_by_hand() -> None:
    lin = EntropySchedule(kind="linear", coef_init=0.001, coef_final=0.0)
    # N = 4: p = 0, 1/4, 1/2, 3/4, then 1 (held)
    assert [lin.at(k, 4) for k in range(6)] == pytest.approx([0.001, 0.00075, 0.0005, 0.00025, 0.0, 0.0], abs=1e-15)
    up = EntropySchedule(kind="linear", coef_init=0.0, coef_final=0.01)
    assert up.at(3, 10) == pytest.approx(0.003, abs=1e-15)
    cos = EntropySchedule(kind="cosine", coef_init=1.0, coef_final=0.0)
    # (1 + cos(π p))/2 at p = 0, 1/4, 1/2, 3/4, 1
    c = (1 + math.sqrt(0.5)) / 2
    assert [cos.at(k, 4) for k in range(5)] == pytest.approx([1.0, c, 0.5, 1 - c, 0.0], abs=1e-15)
    const = EntropySchedule(kind="constant", coef_init=0.002, coef_final=0.002)
    assert {const.at(k, 7) for k in range(9)} == {0.002}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"kind": "exp"}, "kind"),
        ({"kind": "constant", "coef_final": 0.5}, "constant"),
    ],
)
def test_bad_settings(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        EntropySchedule(**({"kind": "linear", "coef_init": 0.1, "coef_final": 0.0} | kw))
    with pytest.raises(ValueError, match="entropy_schedule"):
        EntropySchedule(kind="linear", coef_init=0.1, coef_final=0.0).at(-1, 4)


def _batch() -> tuple[TokenBatch, torch.Tensor]:
    logp = torch.tensor([[-0.5, -1.0, 0.0]], requires_grad=True)
    ent = torch.tensor([[0.3, 0.9, 7.0]], requires_grad=True)  # the last token is padding
    mask = torch.tensor([[True, True, False]])
    return TokenBatch(logp, logp.detach(), torch.zeros(1, 3), mask, ent, ent.detach()), ent


def test_the_bonus_uses_the_step_coefficient() -> None:
    m = load_method("entropy_loss_linear").resolve()
    assert m.needs.entropy_grad
    assert m.has_controller
    assert [m.entropy_coef_step(None, None, step=k, total_steps=4)[0] for k in (0, 2, 4)] == pytest.approx(
        [0.001, 0.0005, 0.0], abs=1e-15
    )
    assert m.entropy_coef_step(None, None, step=1, total_steps=4)[1] is None  # no state to keep
    b, ent = _batch()
    loss, metrics = m.loss(b, entropy_coef=0.0005)
    torch.testing.assert_close(loss, torch.tensor(-0.0005 * 0.6))  # pg = 0 (A = 0); −β_k·token-mean(H)
    assert metrics["loss/entropy_coef"].item() == pytest.approx(0.0005)
    (g,) = torch.autograd.grad(loss, ent)
    torch.testing.assert_close(g, torch.tensor([[-0.00025, -0.00025, 0.0]]))
    b, _ = _batch()
    loss0, _metrics0 = m.loss(b)  # no coefficient given: β_0
    torch.testing.assert_close(loss0, torch.tensor(-0.001 * 0.6))


def test_the_constant_preset_is_unchanged() -> None:
    m = load_method("entropy_loss").resolve()
    assert m.controller is None
    assert not m.has_controller
    assert m.entropy_coef_step(None, 0.3, step=5, total_steps=10) == (0.001, None)
    b, _ = _batch()
    loss, metrics = m.loss(b)
    torch.testing.assert_close(loss, torch.tensor(-0.001 * 0.6))
    assert "loss/entropy_coef" not in metrics
    # a constant schedule at β gives the same loss, bit for bit
    s = load_method("entropy_loss", ["loss.entropy_schedule={kind: constant, coef_init: 0.001, coef_final: 0.001}"])
    b2, _ = _batch()
    coef, _ = s.resolve().entropy_coef_step(None, None, step=3, total_steps=10)
    assert torch.equal(s.resolve().loss(b2, entropy_coef=coef)[0], loss)


def test_the_coefficient_after_a_resume_is_the_uninterrupted_one() -> None:
    """β_k is a function of k alone: a run resumed at step j applies the same β_k for every k ≥ j."""
    m = load_method("entropy_loss_linear", ["loss.entropy_schedule.kind=cosine"]).resolve()
    straight = [m.entropy_coef_step(None, None, step=k, total_steps=5)[0] for k in range(5)]
    state = None
    for k in range(2):  # two steps, then "crash" and start over from the checkpointed state (None)
        _, state = m.entropy_coef_step(state, None, step=k, total_steps=5)
    resumed = [m.entropy_coef_step(state, None, step=k, total_steps=5)[0] for k in range(2, 5)]
    assert resumed == straight[2:]


@pytest.mark.slow
def test_resume_applies_the_same_coefficients(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 steps straight vs 2 steps, a crash in step 3, and a resume: the same β_k and metrics."""
    from trainrun import deterministic, make_cfg, train_until_crash

    from steer_bench.train import train

    preset = load_method("entropy_loss_linear")
    cfg = make_cfg(model_dir, data, steps=3)
    train(cfg, preset, tmp_path / "straight")
    train_until_crash(cfg, preset, tmp_path / "resumed", monkeypatch, step=3)
    train(cfg, preset, tmp_path / "resumed")
    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    # β_k = 0.001·(1 − k/3), k = 0, 1, 2 (a float32 metric: 1 ulp)
    assert [r["loss/entropy_coef"] for r in straight] == pytest.approx([0.001, 0.001 * 2 / 3, 0.001 / 3], rel=1e-6)
    assert deterministic(resumed) == deterministic(straight)

"""The adaptive entropy coefficient: the controller by hand, the bonus it sets, and an exact resume (the state
crosses steps and lives in the checkpoint)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.entropy_control import AdaptiveEntropy
from steer_bench.config.method import load_method
from steer_bench.files import read_json, read_jsonl

CTRL = AdaptiveEntropy(coef_init=0.01, delta=0.005, target=0.5, coef_min=0.0, coef_max=0.012)


def test_controller_steps_by_hand() -> None:
    assert CTRL.step(None, 0.4) == (0.01, 0.012)  # below target: applied c_0, next c_0 + δ capped at 0.012
    assert CTRL.step(0.012, 0.5) == (0.012, 0.012)  # at the target counts as below
    applied, nxt = CTRL.step(0.012, 0.9)  # above: no bonus this step, c falls by δ
    assert applied == 0.0
    assert nxt == pytest.approx(0.007, abs=1e-15)
    assert CTRL.step(0.003, 0.9) == (0.0, 0.0)  # clamped at coef_min


@pytest.mark.parametrize("kw", [{"delta": 0.0}, {"coef_init": 0.02}, {"coef_min": -1.0}])
def test_bad_settings(kw: dict) -> None:
    with pytest.raises(ValueError, match="adaptive_entropy"):
        AdaptiveEntropy(**({"coef_init": 0.01, "delta": 0.005, "target": 0.5, "coef_min": 0.0, "coef_max": 0.012}
                           | kw))  # fmt: skip


def test_the_bonus_uses_the_step_coefficient() -> None:
    m = load_method("adaptive_entropy").resolve()
    assert m.needs.entropy_grad
    logp = torch.tensor([[-0.5, -1.0, 0.0]], requires_grad=True)
    ent = torch.tensor([[0.3, 0.9, 7.0]], requires_grad=True)  # the last token is padding
    mask = torch.tensor([[True, True, False]])
    b = TokenBatch(logp, logp.detach(), torch.zeros(1, 3), mask, ent, ent.detach())
    loss, metrics = m.loss(b, entropy_coef=0.1)
    torch.testing.assert_close(loss, torch.tensor(-0.1 * 0.6))  # pg = 0 (A = 0); −c·token-mean(H)
    assert metrics["loss/entropy_coef"] == pytest.approx(0.1)
    (g,) = torch.autograd.grad(loss, ent)
    torch.testing.assert_close(g, torch.tensor([[-0.05, -0.05, 0.0]]))
    loss0, metrics0 = m.loss(b)  # no coefficient given: c_0 (TRL's 0.0): no bonus
    assert loss0.item() == 0.0
    assert "loss/entropy_bonus" not in metrics0
    assert m.entropy_coef_step(None, 0.1) == (0.0, 0.005)  # H ≤ 0.2: c_0 = 0 applied, next 0.005


@pytest.mark.slow
def test_resume_continues_the_coefficient_exactly(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 steps straight vs 2 steps, a crash in step 3, and a resume: the same coefficients and metrics."""
    from trainrun import deterministic, make_cfg, train_until_crash

    from steer_bench.train import train

    # target far above the tiny model's entropy: the coefficient grows by δ every step and is applied
    preset = load_method("adaptive_entropy", ["loss.adaptive_entropy.target=50.0",
                                              "loss.adaptive_entropy.delta=0.01"])  # fmt: skip
    cfg = make_cfg(model_dir, data, steps=3)
    train(cfg, preset, tmp_path / "straight")

    train_until_crash(cfg, preset, tmp_path / "resumed", monkeypatch, step=3)
    assert read_json(tmp_path / "resumed" / "checkpoints" / "last" / "state.json")["entropy_coef"] == pytest.approx(
        0.02
    )
    train(cfg, preset, tmp_path / "resumed")

    straight = read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    resumed = read_jsonl(tmp_path / "resumed" / "metrics.jsonl")
    # the metric is a float32 tensor: 1 ulp
    assert [r["loss/entropy_coef"] for r in straight] == pytest.approx([0.0, 0.01, 0.02], rel=1e-7, abs=1e-12)
    assert deterministic(resumed) == deterministic(straight)
    for name in ("straight", "resumed"):
        assert read_json(tmp_path / name / "checkpoints" / "last" / "state.json")["entropy_coef"] == pytest.approx(
            0.03
        )

"""Issue 27 (2b–3): A-GRAE and Entrocraft's ``grpo_range_linear`` against values worked out by hand (groups of
different kinds, response lengths and padding), and Entrocraft's schedule across a resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from steer_bench.algos import compute_advantages
from steer_bench.algos.advantages import range_linear_bounds
from steer_bench.config.method import load_method
from steer_bench.files import read_jsonl

EPS = 1e-6
# Groups: 7 = all correct [1, 1, 1]; 3 = mixed [1, 0, 0, 0]; 9 = [0, 1]. Not sorted, interleaved.
SCORES = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0])
GROUPS = torch.tensor([7, 7, 3, 3, 9, 3, 7, 3, 9])
LENGTHS = [3, 1, 2, 4, 1, 3, 2, 4, 1]  # padding on the right, width 4
MASK = torch.tensor([[1.0] * n + [0.0] * (4 - n) for n in LENGTHS])


def per_response(adv: torch.Tensor, mask: torch.Tensor = MASK) -> list[float]:
    """Each row's advantage, after checking it is constant on the valid tokens and 0 on padding."""
    assert torch.equal(adv[mask == 0], torch.zeros(int((mask == 0).sum())))
    assert torch.allclose(adv, adv[:, :1] * mask)
    return adv[:, 0].tolist()


# ----------------------------------------------------------------------------------------------------- A-GRAE
def a_grae(**kw: object) -> torch.Tensor:
    params = {"positive_alpha": 1.0, "norm_by_std": True, "eps": EPS} | kw
    return compute_advantages("a_grae", SCORES, GROUPS, MASK, **params)


def test_a_grae_by_hand() -> None:
    mbar = (1.0 + 0.25 + 0.5) / 3  # the mean of the three group means (all correct, 1 of 4, 1 of 2)
    # group 3: μ = 0.25, unbiased std = √((0.75² + 3·0.25²)/3) = 0.5, √μ = 0.5,
    # GRPO a = (0.75, −0.25, −0.25, −0.25)/(0.5 + ε);
    # so the hard and easy terms are both 0.5·a/(0.5 + ε) and a' = a (up to ε); positives × min(1, μ̄)
    g3 = 0.5 / (0.5 + EPS)
    pos3, neg3 = 0.75 / (0.5 + EPS) * g3 * mbar, -0.25 / (0.5 + EPS) * g3
    # group 9: μ = 0.5, std = √0.5, a = ±0.5/(√0.5 + ε) ≈ ±0.7071; √μ = √0.5
    r = math.sqrt(0.5)
    a9 = 0.5 / (r + EPS)
    shaped9 = (1 - mbar) * 0.5 * a9 / (1 - r + EPS) + mbar * 0.5 * a9 / (r + EPS)
    expected = [0.0, 0.0, neg3, pos3, -shaped9, neg3, 0.0, neg3, shaped9 * mbar]
    assert per_response(a_grae()) == pytest.approx(expected, abs=1e-6)
    assert shaped9 == pytest.approx(0.79463, abs=1e-5)  # 0.41667·1.20711 + 0.58333·0.5
    assert pos3 == pytest.approx(0.875, abs=1e-5)  # 1.5 · 0.58333 (mixed group: only the positive shrinks)


def test_a_grae_positive_alpha_caps_the_shrink() -> None:
    # α = 0.5: min(1, μ̄/α) = 1 (μ̄ = 0.583), positives keep the shaped value
    adv = per_response(a_grae(positive_alpha=0.5))
    assert adv[3] == pytest.approx(0.75 / (0.5 + EPS) * 0.5 / (0.5 + EPS), abs=1e-6)
    assert adv[2] == pytest.approx(-0.25 / (0.5 + EPS) * 0.5 / (0.5 + EPS), abs=1e-6)


def test_a_grae_all_equal_batch_is_zero_and_finite() -> None:
    for s in (0.0, 1.0):
        adv = compute_advantages(
            "a_grae", torch.full((4,), s), torch.tensor([0, 0, 1, 1]), torch.ones(4, 2),
            positive_alpha=1.0, norm_by_std=True, eps=EPS,
        )  # fmt: skip
        assert torch.equal(adv, torch.zeros(4, 2))


def test_a_grae_dr_grpo_base_and_score_range() -> None:
    adv = per_response(a_grae(norm_by_std=False))
    mbar = 1.75 / 3
    assert adv[3] == pytest.approx(0.75 * 0.5 / (0.5 + EPS) * mbar, abs=1e-6)  # s − μ = 0.75
    with pytest.raises(ValueError, match=r"a_grae needs scores in \[0, 1\].*-1\.0.*row 1"):
        compute_advantages(
            "a_grae", torch.tensor([1.0, -1.0]), torch.tensor([0, 0]), torch.ones(2, 1),
            positive_alpha=1.0, norm_by_std=True, eps=EPS,
        )  # fmt: skip


# ------------------------------------------------------------------------------------------------- Entrocraft
LOW, HIGH = (0.6, 0.4), (0.7, 0.5)


def entrocraft(scores: torch.Tensor, entropy: torch.Tensor, step: int, total: int, **kw: object) -> torch.Tensor:
    return compute_advantages(
        "grpo_range_linear", scores, GROUPS, MASK, entropy=entropy, step=step, total_steps=total,
        lower_bound_range=LOW, upper_bound_range=HIGH, norm_by_std=True, eps=EPS, **kw,
    )  # fmt: skip


def test_range_linear_bounds_anneal_linearly() -> None:
    assert range_linear_bounds(0, 100, LOW, HIGH) == pytest.approx((0.6, 0.7))
    assert range_linear_bounds(50, 100, LOW, HIGH) == pytest.approx((0.5, 0.6))
    assert range_linear_bounds(100, 100, LOW, HIGH) == pytest.approx((0.4, 0.5))
    assert range_linear_bounds(1, 4, LOW, HIGH) == pytest.approx((0.55, 0.65))  # verl's first step is 1
    with pytest.raises(ValueError, match="total_steps > 0"):
        range_linear_bounds(1, 0, LOW, HIGH)


def flat(h_valid: float) -> torch.Tensor:
    """Entropy h_valid on every valid token and 9 on padding (which must not count)."""
    return torch.where(MASK > 0, h_valid, 9.0)


def test_entrocraft_switches_on_the_masked_mean_entropy() -> None:
    pm = 2 * SCORES - 1  # ±1 rewards, so that both branches act
    grpo = compute_advantages("grpo", pm, GROUPS, MASK, norm_by_std=True, eps=EPS)
    # step 2 of 4: bounds (0.5, 0.6)
    above = per_response(entrocraft(pm, flat(0.61), 2, 4))  # H > 0.6: RAFT++, max(s, 0)
    assert above == [max(s, 0.0) for s in pm.tolist()]
    below = per_response(entrocraft(pm, flat(0.49), 2, 4))  # H < 0.5: NSR, min(s, 0)
    assert below == [min(s, 0.0) for s in pm.tolist()]
    inside = entrocraft(pm, flat(0.55), 2, 4)  # in range: GRPO
    assert torch.equal(inside, grpo)
    # the same H is above the upper bound late in training (0.5 at step 4 of 4) and inside it early
    assert per_response(entrocraft(pm, flat(0.55), 4, 4)) == above
    assert per_response(entrocraft(pm, flat(0.55), 0, 4)) == below  # and below the lower bound at the start (0.6)
    # the bounds are strict: H equal to a bound is GRPO (verl: `>` upper, `<` lower)
    for h in (0.6, 0.7):  # step 0: the bounds are exactly the ranges' first values
        assert torch.equal(entrocraft(pm, flat(0.1), 0, 4, step_entropy=h), grpo)
    # 0/1 rewards: NSR's min(s, 0) is 0 everywhere (as in the official code)
    assert torch.equal(entrocraft(SCORES, flat(0.1), 2, 4), torch.zeros_like(MASK))


def test_entrocraft_mean_is_over_tokens_not_rows() -> None:
    # row 3 (4 tokens) at 1.0, the other 21 valid tokens at 0.5: token mean (4 + 10.5)/25 = 0.58 → in range at
    # step 2 of 4 (0.5, 0.6); the row mean (1.0 + 8·0.5)/9 = 0.556 would be too, so use step 3 (0.45, 0.55):
    ent = flat(0.5)
    ent[3] = torch.tensor([1.0, 1.0, 1.0, 1.0])
    pm = 2 * SCORES - 1
    raft = [max(s, 0.0) for s in pm.tolist()]
    assert per_response(entrocraft(pm, ent, 3, 4)) == raft  # 0.58 > 0.55
    # the trainer's all-rank mean overrides the local one
    assert torch.equal(entrocraft(pm, ent, 3, 4, step_entropy=0.5), compute_advantages(
        "grpo", pm, GROUPS, MASK, norm_by_std=True, eps=EPS))  # fmt: skip


def test_entrocraft_needs_the_step() -> None:
    with pytest.raises(ValueError, match=r"'grpo_range_linear' needs the training step"):
        compute_advantages(
            "grpo_range_linear", SCORES, GROUPS, MASK, entropy=flat(0.5),
            lower_bound_range=LOW, upper_bound_range=HIGH, norm_by_std=True, eps=EPS,
        )  # fmt: skip


def test_presets_carry_the_official_values() -> None:
    e = load_method("entrocraft").resolve()
    assert e.advantage.name == "grpo_range_linear"
    assert list(e.advantage.lower_bound_range) == [0.6, 0.4]
    assert list(e.advantage.upper_bound_range) == [0.7, 0.5]
    assert e.needs.old_entropy
    a = load_method("a_grae").resolve()
    assert a.advantage.name == "a_grae"
    assert a.advantage.positive_alpha == 1.0


@pytest.mark.slow
def test_entrocraft_bounds_survive_a_resume(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 steps straight vs 2 steps, a crash in step 3, and a resume: step k gets the same (k, T), bounds,
    advantages and metrics (the bounds are a function of the global step, which the checkpoint keeps)."""
    from trainrun import deterministic, make_cfg, train_until_crash

    import steer_bench.algos.advantages as advantages
    from steer_bench.train import train

    seen: list[tuple[int, int, tuple[float, float]]] = []
    real_bounds = advantages.range_linear_bounds

    def spy(step, total_steps, low, high):  # type: ignore[no-untyped-def]
        out = real_bounds(step, total_steps, low, high)
        seen.append((step, total_steps, out))
        return out

    preset = load_method("entrocraft")  # before the spy: loading dry-runs the preset at step 1 of 1
    monkeypatch.setattr(advantages, "range_linear_bounds", spy)
    cfg = make_cfg(model_dir, data, steps=3)
    train(cfg, preset, tmp_path / "straight")
    straight, seen[:] = list(seen), []

    train_until_crash(cfg, preset, tmp_path / "resumed", monkeypatch, step=3)
    train(cfg, preset, tmp_path / "resumed")

    assert [s[:2] for s in straight] == [(1, 3), (2, 3), (3, 3)]
    assert seen == straight
    assert straight[2][2] == pytest.approx((0.6 - 0.2, 0.7 - 0.2))  # step T: the ranges' second values
    assert deterministic(read_jsonl(tmp_path / "resumed" / "metrics.jsonl")) == deterministic(
        read_jsonl(tmp_path / "straight" / "metrics.jsonl")
    )

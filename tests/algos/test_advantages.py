"""Advantage estimators against values worked out by hand (padding, a group of one, zero std, binary scores)."""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos import ADVANTAGES, compute_advantages

# Groups: 0 = three responses [1, 0, 0], 1 = two equal [1, 1] (std 0), 2 = a single response [5].
SCORES = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 5.0])
GROUPS = torch.tensor([7, 7, 7, 3, 3, 9])  # arbitrary int ids, not sorted
# Response lengths 3, 1, 2, 2, 3, 1 (padding on the right).
MASK = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [1, 1, 0], [1, 1, 1], [1, 0, 0]], dtype=torch.float32)


def per_response(adv: torch.Tensor) -> list[float]:
    """The advantage of each row (its first token), after checking it is constant on valid tokens, 0 on padding."""
    first = adv[:, :1].expand_as(adv)
    assert torch.equal(adv * MASK, adv)
    assert torch.allclose(adv, first * MASK)
    return adv[:, 0].tolist()


def test_grpo_std_normalised() -> None:
    adv = compute_advantages("grpo", SCORES, GROUPS, MASK, norm_by_std=True, eps=1e-6)
    std0 = math.sqrt(((2 / 3) ** 2 + 2 * (1 / 3) ** 2) / 2)  # unbiased: divide by n - 1 = 2
    expected = [(2 / 3) / (std0 + 1e-6), (-1 / 3) / (std0 + 1e-6), (-1 / 3) / (std0 + 1e-6), 0.0, 0.0, 5 / (1 + 1e-6)]
    assert per_response(adv) == pytest.approx(expected, abs=1e-6)
    assert expected[0] == pytest.approx(1.1547, abs=1e-4)


def test_dr_grpo_has_no_std() -> None:
    adv = compute_advantages("grpo", SCORES, GROUPS, MASK, norm_by_std=False, eps=1e-6)
    assert per_response(adv) == pytest.approx([2 / 3, -1 / 3, -1 / 3, 0.0, 0.0, 5.0], abs=1e-6)


def test_rloo_is_leave_one_out() -> None:
    adv = compute_advantages("rloo", SCORES, GROUPS, MASK)
    # s_i - mean of the others: 1 - 0, 0 - 1/2, 0 - 1/2; equal pair 0; a single response keeps its score.
    assert per_response(adv) == pytest.approx([1.0, -0.5, -0.5, 0.0, 0.0, 5.0], abs=1e-6)


def test_opo_uses_a_length_weighted_baseline() -> None:
    adv = compute_advantages("opo", SCORES, GROUPS, MASK)
    b = (3 * 1 + 1 * 0 + 2 * 0) / (3 + 1 + 2)  # = 0.5, whereas the plain mean is 1/3
    assert per_response(adv) == pytest.approx([1 - b, -b, -b, 0.0, 0.0, 5.0], abs=1e-6)


def test_opo_group_of_empty_responses_falls_back_to_the_mean() -> None:
    mask = torch.zeros(2, 3)
    adv = compute_advantages("opo", torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), mask)
    assert torch.equal(adv, torch.zeros(2, 3))  # all padding; and no NaN from 0/0
    assert torch.isfinite(adv).all()


def test_w_reinforce_weights_positives_and_has_no_baseline() -> None:
    scores = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0])
    adv = compute_advantages("w_reinforce", scores, GROUPS, MASK, positive_weight=0.1)
    assert per_response(adv) == pytest.approx([0.1, -1.0, 0.1, -1.0, -1.0, -1.0])
    pm = compute_advantages("w_reinforce", 2 * scores - 1, GROUPS, MASK, positive_weight=0.1)
    assert torch.equal(adv, pm)  # {-1, +1} rewards mean the same


def test_w_reinforce_rejects_non_binary_scores() -> None:
    with pytest.raises(ValueError, match=r"binary scores.*0\.5.*row 2"):
        compute_advantages(
            "w_reinforce",
            torch.tensor([1.0, 0.0, 0.5]),
            torch.tensor([0, 0, 0]),
            torch.ones(3, 2),
            positive_weight=0.1,
        )


def test_entropy_adv_adds_a_capped_entropy_bonus() -> None:
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    entropy = torch.tensor([[0.1, 1.0, 2.0], [0.5, 0.0, 3.0], [4.0, 4.0, 4.0]])
    adv = compute_advantages(
        "entropy_adv",
        torch.tensor([1.0, 0.0, 1.0]),
        torch.tensor([0, 0, 1]),
        mask,
        entropy=entropy,
        alpha=0.4,
        kappa=2.0,
        norm_by_std=True,
        eps=1e-6,
    )
    a = 0.5 / (math.sqrt(0.5) + 1e-6)  # GRPO on [1, 0]: ±0.7071
    cap = a / 2
    expected = [
        [a + 0.04, a + cap, a + cap],  # alpha·H = 0.04, 0.4 (> cap), 0.8 (> cap)
        [-a + 0.2, -a + 0.0, -a + cap],  # never flips the sign: the bonus is at most |A|/2
        [1 / (1 + 1e-6) + 0.5 / (1 + 1e-6), 0.0, 0.0],  # group of one: A = s, cap = |A|/2; padding 0
    ]
    assert adv.tolist() == pytest.approx([pytest.approx(r, abs=1e-6) for r in expected])


def test_entropy_adv_all_equal_rewards_get_no_bonus() -> None:
    adv = compute_advantages(
        "entropy_adv",
        torch.ones(2),
        torch.zeros(2, dtype=torch.long),
        torch.ones(2, 2),
        entropy=torch.full((2, 2), 3.0),
        alpha=0.4,
        kappa=2.0,
        norm_by_std=True,
        eps=1e-6,
    )
    assert torch.equal(adv, torch.zeros(2, 2))


def test_entropy_adv_needs_entropy() -> None:
    with pytest.raises(ValueError, match="needs the rollout entropy"):
        compute_advantages("entropy_adv", SCORES, GROUPS, MASK, alpha=0.4, kappa=2.0, norm_by_std=True, eps=1e-6)


def test_unknown_estimator_and_parameters_list_the_valid_ones() -> None:
    valid = "a_grae, entropy_adv, grpo, grpo_range_linear, opo"
    with pytest.raises(ValueError, match=f"unknown advantage estimator 'gae'; valid: {valid}"):
        compute_advantages("gae", SCORES, GROUPS, MASK)
    with pytest.raises(ValueError, match=r"unknown \['norm'\].*missing \['norm_by_std'\].*: norm_by_std, eps"):
        compute_advantages("grpo", SCORES, GROUPS, MASK, norm=True, eps=1e-6)


@pytest.mark.parametrize("name", sorted(ADVANTAGES))
def test_every_estimator_is_float32_finite_and_zero_on_padding(name: str) -> None:
    params = {
        "grpo": {"norm_by_std": True, "eps": 1e-6},
        "rloo": {},
        "opo": {},
        "w_reinforce": {"positive_weight": 0.1},
        "entropy_adv": {"alpha": 0.4, "kappa": 2.0, "norm_by_std": True, "eps": 1e-6},
        "a_grae": {"positive_alpha": 1.0, "norm_by_std": True, "eps": 1e-6},
        "grpo_range_linear": {
            "lower_bound_range": [0.6, 0.4],
            "upper_bound_range": [0.7, 0.5],
            "norm_by_std": True,
            "eps": 1e-6,
        },
    }[name]
    scores = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0])
    adv = compute_advantages(name, scores, GROUPS, MASK, entropy=torch.rand(6, 3), step=1, total_steps=2, **params)
    assert adv.dtype == torch.float32
    assert adv.shape == MASK.shape
    assert torch.isfinite(adv).all()
    assert torch.equal(adv[MASK == 0], torch.zeros(int((MASK == 0).sum())))

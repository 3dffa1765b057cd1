"""STEER signed (our ablation): λ from the signed Ω′ = −Ω, worked by hand for both maps."""

from __future__ import annotations

import math

import torch

from steer_bench.algos import TokenBatch
from steer_bench.algos.entropy import omega
from steer_bench.algos.interventions.steer_signed import SteerSigned, signed_lambda

TOL = {"rtol": 1e-6, "atol": 1e-7}  # float32


def test_exp_map_damps_entropy_reducing_and_boosts_entropy_raising_tokens() -> None:
    om = torch.tensor([[0.5, -0.5, 0.0, 0.25, 7.0]])  # Ω′; the last entry is padding
    mask = torch.tensor([[True, True, True, True, False]])
    lam = signed_lambda(om, mask, weight_min=0.8, weight_max=1.2, mapping="exp", omega_floor=0.02)
    k = -math.log(0.8) / 0.5
    want = [min(math.exp(k * 0.5), 1.2), 0.8, 1.0, math.exp(k * 0.25), 0.0]  # e^{k·0.5} = 1.25 → 1.2
    torch.testing.assert_close(lam[0], torch.tensor(want), **TOL)


def test_floor_sets_k_for_tiny_omegas() -> None:
    om = torch.tensor([[0.001, -0.001]])
    lam = signed_lambda(om, torch.ones(1, 2, dtype=torch.bool), weight_min=0.8, weight_max=1.2, mapping="exp",
                        omega_floor=0.02)  # fmt: skip
    k = -math.log(0.8) / 0.02
    torch.testing.assert_close(lam[0], torch.tensor([math.exp(k * 0.001), math.exp(-k * 0.001)]), **TOL)


def test_linear_map_spans_the_valid_range() -> None:
    om = torch.tensor([[-1.0, 0.0, 3.0, -99.0]])
    mask = torch.tensor([[True, True, True, False]])
    lam = signed_lambda(om, mask, weight_min=0.8, weight_max=1.2, mapping="linear", omega_floor=0.02)
    torch.testing.assert_close(lam[0], torch.tensor([0.8, 0.9, 1.2, 0.0]), **TOL)
    same = signed_lambda(torch.ones(1, 2), torch.ones(1, 2, dtype=torch.bool), weight_min=0.8, weight_max=1.2,
                         mapping="linear", omega_floor=0.02)  # fmt: skip
    torch.testing.assert_close(same, torch.full((1, 2), 1.0), **TOL)  # midpoint when max = min


def test_the_loss_uses_minus_omega() -> None:
    logp = torch.tensor([[-0.05, -3.0, -0.7]], requires_grad=True)
    adv = torch.tensor([[1.0, 1.0, 1.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    ent = torch.full((1, 3), 1.0)
    b = TokenBatch(logp, logp.detach(), adv, mask, ent, ent)
    iv = SteerSigned(weight_min=0.8, weight_max=1.2, mapping="exp", omega_floor=0.02, form="paper")
    from steer_bench.algos.surrogates import clipped_surrogate

    surr = clipped_surrogate(logp, logp.detach(), adv, clip_low=0.2, clip_high=0.2, clip_c=None)
    loss, metrics = iv.token_loss(surr, b, None)
    om = -omega(adv, logp, logp, ent, form="paper")
    # A > 0 on a likely token (ln p + H > 0): entropy falls, Ω′ < 0, damped; on an unlikely one: boosted
    assert om[0, 0] < 0 < om[0, 1]
    lam = loss.detach() / surr.loss.detach()
    assert lam[0, 0] < 1 < lam[0, 1]
    assert metrics["steer_signed/frac_damped"] > 0
    assert metrics["steer_signed/frac_boosted"] > 0

"""Ω against the truth on a single softmax with free logits z (one "state", V actions, float64).

One SGD step of size η on the sampled token a's surrogate −A·π_a(z)/π_old moves z by Δz = −η∇L. The entropy
change is ΔH = H(z + Δz) − H(z). We check (1) the first-order prediction ∇H·Δz is exact up to O(η²) (halving
η quarters the error), (2) when only z_a moves (the paper's Assumption 1 made literal) −η·p·Ω — our
``first_order`` form — is that first-order change, while the released Ω is off by the factor p, and (3) what
the two forms are worth against the true first-order change of a full softmax step.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from steer_bench.algos import omega


def entropy(z: torch.Tensor) -> torch.Tensor:
    logp = z.log_softmax(-1)
    return -(logp.exp() * logp).sum(-1)


def sgd_step(z: torch.Tensor, a: int, adv: float, old_logp: float, eta: float, *, only_sampled: bool) -> torch.Tensor:
    """Δz of one SGD step on L(z) = −A·exp(log π_a(z) − log π_old) (unclipped: r stays near 1)."""
    z = z.clone().requires_grad_(True)
    loss = -adv * torch.exp(z.log_softmax(-1)[a] - old_logp)
    (grad,) = torch.autograd.grad(loss, z)
    dz = -eta * grad
    if only_sampled:
        dz = torch.where(torch.arange(z.numel()) == a, dz, torch.zeros_like(dz))
    return dz


def first_order_change(z: torch.Tensor, dz: torch.Tensor) -> float:
    z = z.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(entropy(z), z)
    return float((grad * dz).sum())


def omega_of(z: torch.Tensor, a: int, adv: float, old_logp: float, form: str) -> float:
    def t(v: float) -> torch.Tensor:
        return torch.tensor([[v]], dtype=torch.float64)

    logp = float(z.log_softmax(-1)[a])
    return float(omega(t(adv), t(old_logp), t(logp), t(float(entropy(z))), form=form))


# A softmax with a likely and an unlikely token, and an off-policy π_old (r = 1.1, inside the clip range).
Z = torch.tensor([2.0, 0.5, -1.0, 0.0, 1.0], dtype=torch.float64)


@pytest.mark.parametrize(("a", "adv"), [(0, 1.0), (2, 1.0), (0, -0.7), (2, -0.7)])
def test_full_linearisation_error_is_second_order(a: int, adv: float) -> None:
    old_logp = float(Z.log_softmax(-1)[a]) - 0.1
    errors = []
    for eta in (0.04, 0.02, 0.01):
        dz = sgd_step(Z, a, adv, old_logp, eta, only_sampled=False)
        errors.append(abs(float(entropy(Z + dz) - entropy(Z)) - first_order_change(Z, dz)))
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(4.0, rel=0.1)


@pytest.mark.parametrize(("a", "adv"), [(0, 1.0), (2, 1.0), (0, -0.7), (2, -0.7)])
def test_first_order_omega_is_exact_under_assumption_1(a: int, adv: float) -> None:
    old_logp = float(Z.log_softmax(-1)[a]) - 0.1
    p = float(Z.softmax(-1)[a])
    pomega = omega_of(Z, a, adv, old_logp, "first_order")
    paper = omega_of(Z, a, adv, old_logp, "paper")
    assert pomega == pytest.approx(p * paper)
    errors = []
    for eta in (0.04, 0.02, 0.01):
        dz = sgd_step(Z, a, adv, old_logp, eta, only_sampled=True)
        true = float(entropy(Z + dz) - entropy(Z))
        assert np.sign(true) == -np.sign(pomega)  # the quadrant rule: ΔH has the sign of −Ω
        errors.append(abs(true - (-eta * pomega)))
        # The released Ω misses the factor p: its error is first order (p < 1), far above p·Ω's.
        assert abs(true - (-eta * paper)) > 10 * errors[-1]
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)
    assert errors[1] / errors[2] == pytest.approx(4.0, rel=0.1)


def test_both_forms_against_a_full_softmax_step() -> None:
    """Measured on 300 random softmaxes (V 3..49, logit scale 0.5..4.5), on-policy, sampled token, A ~ N(0, 1).

    Measured (seed 0): sign agreement 0.917 for both forms (p > 0 does not change a sign); Pearson 0.67 (paper)
    vs 0.78 (p·Ω); Spearman 0.85 vs 0.87; relative MSE 14.1 (paper) vs 0.42 (p·Ω). So with a full softmax
    step p·Ω is the far better estimate of the size of the change; neither is exact, since every logit moves.
    """
    g = torch.Generator().manual_seed(0)
    eta = 1e-3
    rows = []
    for _ in range(300):
        vocab = int(torch.randint(3, 50, (1,), generator=g))
        z = torch.randn(vocab, generator=g, dtype=torch.float64) * (0.5 + 4 * float(torch.rand(1, generator=g)))
        a = int(torch.multinomial(z.softmax(-1), 1, generator=g))
        adv = float(torch.randn(1, generator=g))
        logp = float(z.log_softmax(-1)[a])
        true = first_order_change(z, sgd_step(z, a, adv, logp, eta, only_sampled=False))
        rows.append((true, -eta * omega_of(z, a, adv, logp, "paper"), -eta * omega_of(z, a, adv, logp, "first_order")))
    true, paper, pomega = np.array(rows).T

    def rel_mse(x: np.ndarray) -> float:
        return float(np.mean((x - true) ** 2) / np.mean(true**2))

    sign_paper = np.mean(np.sign(paper) == np.sign(true))
    assert sign_paper == np.mean(np.sign(pomega) == np.sign(true))
    assert 0.85 <= sign_paper <= 0.95
    assert np.corrcoef(pomega, true)[0, 1] > np.corrcoef(paper, true)[0, 1] > 0.5
    assert rel_mse(pomega) < 1.0
    assert rel_mse(paper) > 10 * rel_mse(pomega)

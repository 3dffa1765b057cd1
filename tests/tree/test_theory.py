"""The testbed is the exact setting of the entropy analysis: checked against hand formulas and finite steps.

Independent references: the softmax entropy written out, H = −Σ p ln p; its gradient ∂H/∂z_b = −p_b(ln p_b + H);
and for a full softmax-row step Δz = c·(e_a − π) the first-order change ∇H·Δz = −c·[p_a(ln p_a + H) −
Σ_b p_b²(ln p_b + H)] (Cui et al.'s covariance identity at one state).
"""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos import QUADRANTS, TokenBatch, logprobs_and_entropy, omega
from steer_bench.config import validate
from steer_bench.tree.policy import TabularPolicy
from steer_bench.tree.probe import probe_metrics, probe_step, state_entropy, vanilla
from steer_bench.tree.task import TreeTaskConfig, make_task


def direct_entropy(z: torch.Tensor) -> float:
    p = [math.exp(v) for v in z.tolist()]
    total = sum(p)
    return -sum(q / total * math.log(q / total) for q in p)


def test_model_logp_and_entropy_equal_a_direct_computation() -> None:
    cfg = {"problems": 3, "depth": 3, "branching": 4, "state": "prefix", "share": 1}
    task = make_task(validate(TreeTaskConfig, {**cfg, "verifier": {"kind": "mod", "modulus": 2}}, source="t"), 0)
    policy = TabularPolicy(task, init_std=2.0, seed=1)
    problems, responses = torch.tensor([0, 2, 1]), torch.tensor([[3, 0, 1], [1, 1, 2], [0, 3, 3]])
    logp, entropy = logprobs_and_entropy(policy(problems, responses), responses, temperature=1.0)
    rows = task.state_ids(problems, responses)
    for b in range(3):
        for t in range(3):
            z = policy.table[rows[b, t]].detach()
            token = int(responses[b, t])
            expected_logp = z[token].item() - math.log(sum(math.exp(v) for v in z.tolist()))
            assert logp[b, t].item() == pytest.approx(expected_logp, abs=1e-12)
            assert entropy[b, t].item() == pytest.approx(direct_entropy(z), abs=1e-12)
    direct = torch.tensor([direct_entropy(z) for z in policy.table.detach()], dtype=torch.float64)
    assert torch.allclose(state_entropy(policy.table), direct)


def one_token_step(z: torch.Tensor, token: int, adv: float, eta: float, *, sampled_only: bool) -> tuple[float, ...]:
    """One SGD step of the library's vanilla loss on one on-policy token at one state.

    Returns (exact ΔH, Ω_first_order, Ω_paper, p, H) with Ω from ``algos.omega``.
    """
    z = z.clone().requires_grad_(True)
    labels = torch.tensor([[token]])
    logp, ent = logprobs_and_entropy(z.view(1, 1, -1), labels, temperature=1.0)
    a, mask = torch.tensor([[adv]], dtype=torch.float64), torch.ones(1, 1, dtype=torch.bool)
    loss, _ = vanilla().loss(TokenBatch(logp, logp.detach(), a, mask))
    (grad,) = torch.autograd.grad(loss, z)
    if sampled_only:  # Assumption 1: only the sampled token's logit moves
        grad = grad * torch.nn.functional.one_hot(torch.tensor(token), len(z))
    new = z.detach() - eta * grad
    dh = direct_entropy(new) - direct_entropy(z.detach())
    fo = omega(a, logp.detach(), logp.detach(), ent.detach(), form="first_order").item()
    paper = omega(a, logp.detach(), logp.detach(), ent.detach(), form="paper").item()
    return dh, fo, paper, logp.exp().item(), ent.item()


# (logits, sampled token, advantage): one case per quadrant of (sign A) × (sign of ln p + H)
QUADRANT_CASES = [
    ([2.0, 0.1, -0.5, 0.3], 0, 1.3),  # likely token pushed up: entropy falls
    ([2.0, 0.1, -0.5, 0.3], 2, 0.8),  # unlikely token pushed up: entropy rises
    ([2.0, 0.1, -0.5, 0.3], 0, -0.9),  # likely token pushed down: entropy rises
    ([1.5, 0.2, -1.0, 0.0], 2, -1.1),  # unlikely token pushed down: entropy falls
]


@pytest.mark.parametrize(("logits", "token", "adv"), QUADRANT_CASES)
def test_sampled_logit_step_changes_entropy_by_first_order_omega(logits: list, token: int, adv: float) -> None:
    """Assumption 1 exactly: ΔH = −η·p·Ω = −η·Ω_first_order + O(η²) (token-mean over one token: L = 1)."""
    z = torch.tensor(logits, dtype=torch.float64)
    errors = []
    for eta in (0.02, 0.01, 0.005):
        dh, fo, paper, p, h = one_token_step(z, token, adv, eta, sampled_only=True)
        assert fo == pytest.approx(p * paper)
        assert math.copysign(1, dh) == math.copysign(1, -adv * (math.log(p) + h))  # the paper's quadrant rule
        errors.append(abs(dh - (-eta * fo)))
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.1)  # the residual is second order in η
    assert errors[1] / errors[2] == pytest.approx(4.0, rel=0.1)
    assert errors[2] < 0.01 * abs(0.005 * fo)


@pytest.mark.parametrize(("logits", "token", "adv"), QUADRANT_CASES)
def test_full_softmax_step_adds_the_normaliser_term_that_omega_omits(logits: list, token: int, adv: float) -> None:
    """Plain SGD moves the whole row: ΔH/η → −A·[p(ln p + H) − Σ_b p_b²(ln p_b + H)]
    = −p·Ω + A·Σ_{b≠a} p_b²(ln p_b + H): the first-order Ω is exact only under Assumption 1."""
    z = torch.tensor(logits, dtype=torch.float64)
    pi = torch.softmax(z, -1)
    h = direct_entropy(z)
    p = pi[token].item()
    normaliser = sum(q * q * (math.log(q) + h) for q in pi.tolist())
    expected_rate = -adv * (p * (math.log(p) + h) - normaliser)
    eta = 1e-4
    dh, fo, *_ = one_token_step(z, token, adv, eta, sampled_only=False)
    assert dh / eta == pytest.approx(expected_rate, rel=1e-3)
    # on-policy (π_old = p) p·Ω = A·p(1 − p)(ln p + H): the other logits' share is what it leaves out
    assert fo == pytest.approx(adv * p * (1 - p) * (math.log(p) + h))
    others = sum(q * q * (math.log(q) + h) for b, q in enumerate(pi.tolist()) if b != token)
    assert dh / eta + fo == pytest.approx(adv * others, rel=1e-3)


def test_probe_linearisation_is_exact_to_second_order_and_leaves_the_table_alone() -> None:
    cfg = {"problems": 4, "depth": 4, "branching": 3, "state": "prev", "share": 2}
    task = make_task(validate(TreeTaskConfig, {**cfg, "verifier": {"kind": "mod", "modulus": 3}}, source="t"), 0)
    policy = TabularPolicy(task, init_std=1.0, seed=0)
    problems = torch.arange(4).repeat_interleave(3)
    responses = policy.sample(problems, torch.Generator().manual_seed(0))
    ids = task.state_ids(problems, responses)
    adv = torch.randn(12, 1, generator=torch.Generator().manual_seed(1), dtype=torch.float64).expand(12, 4)
    before = policy.table.detach().clone()
    errors = []
    for r in probe_step(policy.table, ids, responses, adv, lrs=(0.4, 0.2, 0.1)):
        errors.append(abs(r.delta_h - r.predictions["linear"]).max())
        assert r.token_change.sum().item() == pytest.approx(r.predictions["linear"].sum())
    assert errors[0] / errors[1] == pytest.approx(4.0, rel=0.25)
    assert errors[1] / errors[2] == pytest.approx(4.0, rel=0.25)
    assert torch.equal(policy.table.detach(), before)


def test_quadrant_shares_cover_the_signal_tokens_and_are_undefined_without_signal() -> None:
    cfg = {"problems": 4, "depth": 3, "branching": 3, "state": "prev", "share": 1}
    task = make_task(validate(TreeTaskConfig, {**cfg, "verifier": {"kind": "mod", "modulus": 3}}, source="t"), 0)
    policy = TabularPolicy(task, init_std=1.0, seed=0)
    problems = torch.arange(4).repeat_interleave(4)
    responses = policy.sample(problems, torch.Generator().manual_seed(0))
    ids = task.state_ids(problems, responses)
    adv = torch.linspace(-1, 1, 16, dtype=torch.float64).unsqueeze(1).expand(16, 3)
    (result,) = probe_step(policy.table, ids, responses, adv, lrs=(0.1,))
    m = probe_metrics(result, "probe", quadrants=True)
    assert sum(m[f"quadrant/{q}/tokens"] for q in QUADRANTS.values()) == pytest.approx(1.0)
    assert sum(abs(m[f"quadrant/{q}/dh"]) for q in QUADRANTS.values()) <= 1.0 + 1e-12
    (silent,) = probe_step(policy.table, ids, responses, torch.zeros_like(adv), lrs=(0.1,))
    m = probe_metrics(silent, "probe", quadrants=True)
    assert math.isnan(m["quadrant/pos_high/tokens"])
    assert m["probe/states"] == 0

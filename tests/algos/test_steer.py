"""STEER: Ω's sign per quadrant, λ's range and floor, a per-token loop from the formula vs the vectorised
code, the released per-micro-batch normalisation (scope micro) and micro-batch invariance (scope mini)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from steer_bench.algos import Method, TokenBatch, Totals, omega, quadrant
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.interventions.ppo import PPO
from steer_bench.algos.interventions.steer import Steer, steer_weights

MakeBatch = Callable[..., dict[str, torch.Tensor]]  # the make_batch fixture (conftest.py)

STEER = {
    "weight_min": 0.8,
    "weight_max": 1.0,
    "mapping": "exp",
    "scope": "micro",
    "omega_floor": 0.02,
    "k_norm": "max",
    "form": "paper",
}
RELEASE = {k: v for k, v in STEER.items() if k != "scope"}  # steer_weights: the release's λ settings
CLIP = {"clip_low": 0.2, "clip_high": 0.28, "clip_c": 10.0, "agg": "token-mean"}
GRPO = Grpo(norm_by_std=True, eps=1e-6)  # the loss never reads the estimator
STEER_METHOD = Method(name="steer", advantage=GRPO, intervention=Steer(**STEER), **CLIP)
PPO_METHOD = Method(name="ppo", advantage=GRPO, intervention=PPO(), **CLIP)


def _steer_loss(x: dict[str, torch.Tensor], totals: Totals | None = None) -> tuple[torch.Tensor, dict]:
    return STEER_METHOD.loss(
        TokenBatch(x["logp"], x["old"], x["adv"], x["mask"], old_entropy=x["old_entropy"]), totals
    )


def _t(rows: list[list[float]]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)


def test_omega_sign_in_each_quadrant() -> None:
    # p = 0.9 with H = 0.5: ln p + H = 0.39 > 0 (a likely token); p = 0.01: ln p + H = -4.1 < 0 (an unlikely one).
    logp = _t([[math.log(0.9), math.log(0.01), math.log(0.9), math.log(0.01)]])
    adv = _t([[1.0, 1.0, -1.0, -1.0]])
    ent = torch.full_like(logp, 0.5)
    om = omega(adv, logp, logp, ent, form="paper")
    assert (om.sign() == _t([[1, -1, -1, 1]])).all()  # entropy change ∝ -Ω: falls, rises, rises, falls
    assert quadrant(adv, logp, ent, torch.ones_like(logp)).tolist() == [[1, 2, 3, 4]]
    # Hand value of the first token: (A/π_old)·p(1-p)(ln p + H) with π_old = p.
    assert float(om[0, 0]) == pytest.approx(1 / 0.9 * 0.9 * 0.1 * (math.log(0.9) + 0.5))
    assert float(omega(adv, logp, logp, ent, form="first_order")[0, 0]) == pytest.approx(0.9 * float(om[0, 0]))


def test_omega_release_bfc8d2e_form_squares_one_minus_p() -> None:
    """Release commit bfc8d2e: f = p(1 − p)²(ln p + H), i.e. (1 − p) × the current release's Ω, token by token."""
    p, old_p, h, a = 0.3, 0.25, 1.1, -0.7
    args = (_t([[a]]), _t([[math.log(old_p)]]), _t([[math.log(p)]]), _t([[h]]))
    v1 = float(omega(*args, form="release_bfc8d2e")[0, 0])
    assert v1 == pytest.approx(a / old_p * p * (1 - p) ** 2 * (math.log(p) + h), rel=1e-12)  # float64 inputs
    assert v1 == pytest.approx((1 - p) * float(omega(*args, form="paper")[0, 0]), rel=1e-12)
    with pytest.raises(ValueError, match="release_bfc8d2e"):
        omega(*args, form="v1")


def test_omega_zeroes_non_finite_values_and_zero_advantage() -> None:
    om = omega(_t([[math.inf, 0.0]]), _t([[-1.0, -1.0]]), _t([[-1.0, -1.0]]), _t([[0.5, 0.5]]), form="paper")
    assert om.tolist() == [[0.0, 0.0]]
    assert quadrant(_t([[0.0]]), _t([[-1.0]]), _t([[0.5]]), _t([[1.0]])).tolist() == [[0]]


LENGTHS = [7, 2, 5, 7, 1, 6, 3, 7]


def naive_steer_loss(x: dict[str, torch.Tensor], lam_min: float, clip: dict[str, float]) -> tuple[float, list]:
    """Token by token, from docs/methods.md §M14 with python floats: Ω, k, λ, the dual-clip surrogate, token-mean."""
    b, t = x["mask"].shape
    valid = [(i, j) for i in range(b) for j in range(t) if x["mask"][i, j] > 0]
    omegas = {}
    for i, j in valid:
        p = min(max(math.exp(x["logp"][i, j].item()), 1e-8), 1 - 1e-8)
        old_p = max(math.exp(x["old"][i, j].item()), 1e-8)
        a, h = x["adv"][i, j].item(), x["old_entropy"][i, j].item()
        omegas[i, j] = a / old_p * p * (1 - p) * (math.log(p) + h)
    k = -math.log(lam_min) / max(max(abs(o) for o in omegas.values()), 0.02)
    total, lams = 0.0, {}
    for i, j in valid:
        lams[i, j] = min(max(math.exp(-k * abs(omegas[i, j])), lam_min), 1.0)
        a = x["adv"][i, j].item()
        r = math.exp(x["logp"][i, j].item() - x["old"][i, j].item())
        l_clip = max(-a * r, -a * min(max(r, 1 - clip["clip_low"]), 1 + clip["clip_high"]))
        loss = min(-a * clip["clip_c"], l_clip) if a < 0 else l_clip
        total += lams[i, j] * loss
    return total / len(valid), [lams[v] for v in valid]


def test_vectorised_steer_matches_a_per_token_loop(make_batch: MakeBatch) -> None:
    x = make_batch(0, LENGTHS, 7, noise=0.2)
    loss, metrics = _steer_loss(x)
    expected, lams = naive_steer_loss(x, 0.8, CLIP)
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    lam = steer_weights(x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE)
    assert lam[x["mask"].bool()].tolist() == pytest.approx(lams, rel=1e-5)
    assert float(metrics["steer/lambda_min"]) == pytest.approx(min(lams), rel=1e-6)
    assert float(metrics["steer/lambda_mean"]) == pytest.approx(sum(lams) / len(lams), rel=1e-6)


def test_exp_lambda_range_and_the_largest_omega_at_lambda_min(make_batch: MakeBatch) -> None:
    x = make_batch(1, LENGTHS, 7, noise=0.2)
    abs_om = omega(x["adv"], x["old"], x["logp"], x["old_entropy"], form="paper").abs()
    assert abs_om[x["mask"].bool()].max() >= 0.02  # the floor is not active here
    for lam_min in (0.5, 0.8):
        lam = steer_weights(
            x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE | {"weight_min": lam_min}
        )
        valid = lam[x["mask"].bool()]
        assert valid.min() >= lam_min - 1e-6
        assert valid.max() <= 1.0
        top = (abs_om * x["mask"]).flatten().argmax()
        assert lam.flatten()[top].item() == pytest.approx(lam_min)
        assert torch.equal(lam[x["mask"] == 0], torch.zeros(int((x["mask"] == 0).sum()), dtype=lam.dtype))


def test_floor_keeps_small_omegas_near_one(make_batch: MakeBatch) -> None:
    x = make_batch(2, LENGTHS, 7, noise=0.2)
    x["adv"] = x["adv"] * 1e-6  # max|Ω| far below the 0.02 floor
    abs_om = omega(x["adv"], x["old"], x["logp"], x["old_entropy"], form="paper").abs()
    lam = steer_weights(x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE)
    k = -math.log(0.8) / 0.02
    assert torch.allclose(lam, torch.exp(-k * abs_om) * x["mask"])
    assert lam[x["mask"].bool()].min() > 0.99
    _, m = _steer_loss(x)
    assert float(m["steer/floor_active"]) == 1.0
    assert float(m["steer/frac_lambda_below_099"]) == 0.0


def test_linear_map_by_hand() -> None:
    # |Ω| = (1/π_old)·p(1-p)|ln p + H| with A = 1, π_old = p: choose H so that |Ω| = 0, 0.1, 0.2, 0.4.
    p = torch.tensor([[0.5, 0.5, 0.5, 0.5]], dtype=torch.float64)
    target = torch.tensor([[0.0, 0.1, 0.2, 0.4]], dtype=torch.float64)
    ent = target / (1 - p) - p.log()
    lam = steer_weights(
        torch.ones_like(p),
        p.log(),
        p.log(),
        ent,
        torch.ones_like(p),
        **RELEASE | {"weight_max": 1.2, "mapping": "linear"},
    )
    assert lam.tolist()[0] == pytest.approx([1.2, 1.1, 1.0, 0.8])
    same = steer_weights(
        torch.zeros_like(p),
        p.log(),
        p.log(),
        ent,
        torch.ones_like(p),
        **RELEASE | {"weight_max": 1.2, "mapping": "linear"},
    )
    assert same.tolist()[0] == pytest.approx([1.0] * 4)  # max = min: the midpoint


def test_quantile_k_norm_is_our_ablation_of_the_normaliser(make_batch: MakeBatch) -> None:
    x = make_batch(3, [12, 5, 9, 12, 1, 7, 12, 3, 12, 10, 4, 12, 8, 2, 12, 6], 12, noise=0.2)
    abs_om = omega(x["adv"], x["old"], x["logp"], x["old_entropy"], form="paper").abs()
    mask = x["mask"].bool()
    q90 = torch.quantile(abs_om[mask], 0.9).item()
    lam = steer_weights(
        x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE | {"k_norm": "quantile:0.9"}
    )
    k = -math.log(0.8) / max(q90, 0.02)
    assert torch.allclose(lam, (torch.exp(-k * abs_om).clamp(0.8, 1.0)) * x["mask"])
    at_min = (lam[mask] <= 0.8 + 1e-9).float().mean().item()
    assert at_min >= 0.1 - 1e-9  # every token above the 0.9-quantile sits at λ_min
    with pytest.raises(ValueError, match="k_norm must be 'max' or 'quantile:<q>'"):
        steer_weights(
            x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE | {"k_norm": "quantile:1.5"}
        )


def test_lambda_carries_no_gradient(make_batch: MakeBatch) -> None:
    x = make_batch(4, LENGTHS, 7, noise=0.2)
    logp = x["logp"].clone().requires_grad_(True)
    loss, _ = _steer_loss(x | {"logp": logp})
    loss.backward()
    lam = steer_weights(x["adv"], x["old"], x["logp"], x["old_entropy"], x["mask"], **RELEASE)
    logp2 = x["logp"].clone().requires_grad_(True)
    ppo, _ = PPO_METHOD.loss(TokenBatch(logp2, x["old"], x["adv"] * lam, x["mask"]))  # λ·L with λ a constant
    ppo.backward()
    assert torch.allclose(logp.grad, logp2.grad, atol=1e-7)


def release_token_weights(x: dict[str, torch.Tensor], lam_min: float) -> torch.Tensor:
    """The released ``compute_token_weights`` (exponential branch), transcribed: one normalisation group."""
    p = torch.clamp(torch.exp(x["logp"]), min=1e-8, max=1.0 - 1e-8)
    old_p = torch.clamp(torch.exp(x["old"]), min=1e-8, max=1.0)
    metric = (x["adv"] / old_p * (p * (1 - p)) * (torch.log(p) + x["old_entropy"])).abs()
    valid = x["mask"].bool()
    k = -math.log(lam_min) / torch.maximum(metric[valid].max(), torch.tensor(0.02))
    w = torch.zeros_like(metric)
    w[valid] = torch.clamp(torch.exp(-k * metric[valid]), min=lam_min, max=1.0)
    return w


def _split(x: dict[str, torch.Tensor], sl: slice) -> dict[str, torch.Tensor]:
    return {k: v[sl] for k, v in x.items()}


SPLITS = [slice(0, 3), slice(3, 5), slice(5, 8)]


def test_scope_micro_reproduces_the_release_per_micro_batch(make_batch: MakeBatch) -> None:
    x = make_batch(5, LENGTHS, 7, noise=0.2)
    totals = Totals(batch_tokens=int(x["mask"].sum()), batch_seqs=int((x["mask"].sum(-1) > 0).sum()))
    ours = sum(_steer_loss(m, totals)[0].item() for m in (_split(x, sl) for sl in SPLITS))
    release = 0.0
    for sl in SPLITS:
        m = _split(x, sl)
        weighted = TokenBatch(m["logp"], m["old"], m["adv"] * release_token_weights(m, 0.8), m["mask"])
        surrogate = PPO_METHOD.loss(weighted, totals)[0]
        release += surrogate.item()
    assert ours == pytest.approx(release, rel=1e-6)
    whole = _steer_loss(x)[0].item()
    assert abs(ours - whole) > 1e-4  # the expected non-invariance of the released normalisation


def test_scope_mini_is_invariant_to_micro_batching(make_batch: MakeBatch) -> None:
    x = make_batch(6, LENGTHS, 7, noise=0.2)
    mini = Method(name="steer", advantage=GRPO, intervention=Steer(**STEER | {"scope": "mini"}), **CLIP)
    totals = Totals(batch_tokens=int(x["mask"].sum()), batch_seqs=int((x["mask"].sum(-1) > 0).sum()))
    stats = mini.mini_batch_stats(TokenBatch(x["logp"], x["old"], x["adv"], x["mask"], old_entropy=x["old_entropy"]))
    assert stats is not None

    def run(splits: list[slice], totals: Totals | None, stats: object) -> tuple[float, torch.Tensor]:
        logp = x["logp"].clone().requires_grad_(True)
        total = 0.0
        for sl in splits:
            batch = TokenBatch(logp[sl], x["old"][sl], x["adv"][sl], x["mask"][sl], old_entropy=x["old_entropy"][sl])
            loss, _ = mini.loss(batch, totals, stats)
            loss.backward()
            total += loss.item()
        return total, logp.grad

    whole = run([slice(0, 8)], None, None)
    for splits in (SPLITS, [slice(i, i + 1) for i in range(8)]):
        split = run(splits, totals, stats)
        assert split[0] == pytest.approx(whole[0], rel=1e-6)
        assert torch.allclose(split[1], whole[1], atol=1e-7)
    assert STEER_METHOD.mini_batch_stats(TokenBatch(x["logp"], x["old"], x["adv"], x["mask"])) is None

"""Issue 27 item 4, our STEER ablations (docs/methods.md §M22, §M23): the theorem form of Ω (r·A with the clipping
indicator, ``steer_theorem``) and the rank map (``steer_rank``), against hand-worked values with padding; the
share of λ at a bound; and the earlier STEER presets' λ pinned to their values before these additions."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from steer_bench.algos import TokenBatch, omega
from steer_bench.algos.interventions.steer import Steer, lambda_map, rank_fraction
from steer_bench.algos.interventions.steer_signed import SteerSigned
from steer_bench.algos.surrogates import clipped_surrogate
from steer_bench.config.method import load_method
from tests.algos.conftest import Batch, random_batch

LENGTHS = [7, 2, 5, 7, 1, 6, 3, 7]
STEER = {"weight_min": 0.8, "weight_max": 1.0, "scope": "micro", "omega_floor": 0.02, "k_norm": "max"}


def lam_of(preset: str, x: Batch, overrides: tuple[str, ...] = ()) -> tuple[torch.Tensor, dict]:
    """(λ (B, T), metrics) of a preset's intervention on one micro-batch: the surrogate's loss replaced by ones,
    so the returned per-token loss is λ itself (clip state, ratio and the rest as the trainer computes them)."""
    m = load_method(preset, list(overrides)).resolve()
    s = clipped_surrogate(x["logp"], x["old"], x["adv"], clip_low=m.clip_low, clip_high=m.clip_high, clip_c=m.clip_c)
    s = dataclasses.replace(s, loss=torch.ones_like(s.loss))
    b = TokenBatch(x["logp"], x["old"], x["adv"], x["mask"].bool(), None, x["old_entropy"])
    return m.intervention.token_loss(s, b, None)


# ---- theorem form --------------------------------------------------------------------------------------------

# (A, p = π_θ, π_old, H_old) per token of a (2, 3) batch; the last token of row 1 is padding.
TOKENS = [
    [(1.0, 0.5, 0.5, 1.0), (1.0, 0.6, 0.4, 1.0), (1.0, 0.1, 0.09, 2.0)],
    [(-1.0, 0.2, 0.22, 0.5), (-1.0, 0.05, 0.004, 0.5), (5.0, 1e-6, 1e-7, 3.0)],
]
MASK = [[True, True, True], [True, True, False]]


def theorem_batch() -> Batch:
    t = torch.tensor(TOKENS, dtype=torch.float64)
    return {
        "adv": t[..., 0],
        "logp": t[..., 1].log(),
        "old": t[..., 2].log(),
        "old_entropy": t[..., 3],
        "mask": torch.tensor(MASK),
    }


def test_theorem_form_by_hand_with_the_clipping_indicator() -> None:
    """ε 0.2/0.28, c = 10 (steer.yaml). r per token: 1, 1.5 (A > 0, r > 1.28: clipped), 1.11; 0.909, 12.5 (A < 0,
    r > c: the dual clip binds, our choice to count it), padding. Ω = I·A·r·p(1 − p)(ln p + H), by hand:"""
    x = theorem_batch()
    om00 = 1 * 1.0 * 0.5 * 0.5 * (math.log(0.5) + 1.0)  # 0.0767132
    om02 = 1 * (0.1 / 0.09) * 0.1 * 0.9 * (math.log(0.1) + 2.0)  # -0.0302585
    om10 = -1 * (0.2 / 0.22) * 0.2 * 0.8 * (math.log(0.2) + 0.5)  # +0.1613728
    assert (om00, om02, om10) == pytest.approx((0.0767132, -0.0302585, 0.1613728), abs=1e-7)
    k = -math.log(0.8) / max(abs(om00), abs(om02), abs(om10), 0.02)
    want = [
        [math.exp(-k * abs(om00)), 1.0, math.exp(-k * abs(om02))],
        [0.8, 1.0, 0.0],  # the largest |Ω| gets λ_min; the dual-clipped token Ω = 0 -> λ = 1; padding 0
    ]
    lam, metrics = lam_of("steer_theorem", x)
    torch.testing.assert_close(lam, torch.tensor(want, dtype=torch.float64), rtol=1e-12, atol=0)
    assert float(metrics["steer/omega_abs_max"]) == pytest.approx(abs(om10), rel=1e-12)
    # Without the indicator (the raw form) the clipped tokens keep their Ω; the released form A/π_old is
    # dominated by the dual-clipped 1/π_old = 250 token.
    raw = omega(x["adv"], x["old"], x["logp"], x["old_entropy"], form="theorem")
    assert float(raw[0, 1]) == pytest.approx(1 * 1.5 * 0.6 * 0.4 * (math.log(0.6) + 1.0), rel=1e-12)
    assert float(raw[1, 1]) == pytest.approx(-1 * 12.5 * 0.05 * 0.95 * (math.log(0.05) + 0.5), rel=1e-12)
    paper, _ = lam_of("steer", x)
    assert float(paper[1, 1]) == pytest.approx(0.8)
    assert float(paper[1, 0]) > 0.99  # the token that sets the theorem form's max is near 1 under the release's


def test_theorem_form_is_p_times_the_released_omega_where_no_clamp_binds(make_batch) -> None:
    """A·r = (A/π_old)·p, so before the indicator the theorem form equals our first-order form p·Ω (§M17)."""
    x = {k: v.double() for k, v in make_batch(3, LENGTHS, 7).items()}
    args = (x["adv"], x["old"], x["logp"], x["old_entropy"])
    free = x["logp"] < math.log(1 - 1e-8)  # p > 1 − 1e-8 is clamped in p(1 − p) but not in r
    assert free.sum() > 40
    theorem, first_order = omega(*args, form="theorem"), omega(*args, form="first_order")
    torch.testing.assert_close(theorem[free], first_order[free], rtol=1e-12, atol=0)


def test_theorem_form_and_rank_map_need_scope_micro() -> None:
    with pytest.raises(ValueError, match=r"form theorem .*scope micro"):
        Steer(**{**STEER, "scope": "mini"}, mapping="exp", form="theorem")
    with pytest.raises(ValueError, match=r"mapping rank .*scope micro"):
        Steer(**{**STEER, "scope": "mini"}, mapping="rank", form="paper")
    with pytest.raises(ValueError, match="theorem"):
        SteerSigned(weight_min=0.8, weight_max=1.2, mapping="exp", omega_floor=0.02, form="theorem")
    Steer(**STEER, mapping="rank", form="theorem")  # both ablations at once: allowed


# ---- rank map ------------------------------------------------------------------------------------------------

# |Ω| of a (2, 4) micro-batch: one 1/π_old-sized outlier (1e6), a tie (0.03), padding with huge values.
ABS = [[0.03, 0.01, 1e6, 1e9], [0.03, 5e8, 0.05, 0.02]]
ABS_MASK = [[True, True, True, False], [True, False, True, True]]


def test_rank_map_by_hand_with_ties_and_padding() -> None:
    """n = 6 valid: sorted 0.01, 0.02, 0.03, 0.03, 0.05, 1e6 -> average ranks 1, 2, 3.5, 3.5, 5, 6;
    u = (R − 1)/5 = 0, 0.2, 0.5, 0.5, 0.8, 1; λ = 1 − 0.2·u = 1, 0.96, 0.9, 0.9, 0.84, 0.8; padding λ = 1."""
    a, mask = torch.tensor(ABS, dtype=torch.float64), torch.tensor(ABS_MASK)
    u = torch.tensor([[0.5, 0.0, 1.0, 0.0], [0.5, 0.0, 0.8, 0.2]], dtype=torch.float64)
    torch.testing.assert_close(rank_fraction(a, mask), u, rtol=1e-12, atol=0)
    lam = lambda_map(a, mask, lo=0.0, scale=0.0, weight_min=0.8, weight_max=1.0, mapping="rank", omega_floor=0.02)
    want = torch.tensor([[0.9, 1.0, 0.8, 1.0], [0.9, 1.0, 0.84, 0.96]], dtype=torch.float64)
    torch.testing.assert_close(lam, want, rtol=1e-12, atol=0)
    one = torch.tensor([[0.7, 3.0]], dtype=torch.float64), torch.tensor([[True, False]])
    assert rank_fraction(*one).tolist() == [[0.0, 0.0]]  # a single valid token: u = 0, λ = 1


def test_outlier_pins_the_min_max_map_at_a_bound_but_not_the_rank_map() -> None:
    """The release's exp map: k = −ln 0.8 / 1e6, so every other token has λ > 1 − 1e-7: 6/6 at a bound (5 at 1,
    the outlier at λ_min). The rank map: 2/6 (the smallest at 1, the outlier at 0.8), the rest spread between."""
    a, mask = torch.tensor(ABS, dtype=torch.float64), torch.tensor(ABS_MASK)
    b = TokenBatch(torch.full_like(a, -1.0), torch.full_like(a, -1.0), torch.ones_like(a), mask, None, a * 0 + 0.5)
    shares = {}
    for mapping in ("exp", "rank"):
        steer = Steer(**STEER, mapping=mapping, form="paper")
        lam = lambda_map(
            a, mask, lo=0.01, scale=1e6, weight_min=0.8, weight_max=1.0, mapping=mapping, omega_floor=0.02
        )
        m = steer._metrics(b, a, lam, 1e6)
        shares[mapping] = tuple(float(m[f"steer/frac_lambda_at_{k}"]) for k in ("min", "max", "bound"))
    assert shares["exp"] == pytest.approx((1 / 6, 5 / 6, 1.0))
    assert shares["rank"] == pytest.approx((1 / 6, 1 / 6, 2 / 6))


def test_rank_map_is_invariant_to_monotone_transforms_of_omega() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.rand(4, 9, generator=g, dtype=torch.float64) ** 6 * 50  # heavy-tailed
    mask = torch.rand(4, 9, generator=g) > 0.25

    def lam(x: torch.Tensor, mapping: str) -> torch.Tensor:
        lo, hi = float(x[mask].min()), float(x[mask].max())
        return lambda_map(x, mask, lo=lo, scale=hi, weight_min=0.8, weight_max=1.0, mapping=mapping, omega_floor=0.02)

    base = lam(a, "rank")
    for f in (lambda x: 7.5 * x, lambda x: x.sqrt(), torch.log1p, lambda x: x**3 + 2 * x):
        assert torch.equal(lam(f(a), "rank"), base)
    assert not torch.allclose(lam(a.sqrt(), "exp"), lam(a, "exp"))  # the exp map is not (only to rescaling)


def test_rank_preset_end_to_end_against_a_per_token_loop(make_batch) -> None:
    """steer_rank on a ragged float64 batch: λ from a python sort of the valid |Ω| (paper form), 1 on padding."""
    x = {k: v.double() for k, v in make_batch(11, LENGTHS, 7).items()}
    lam, metrics = lam_of("steer_rank", x)
    om = omega(x["adv"], x["old"], x["logp"], x["old_entropy"], form="paper").abs()
    cells = [(i, j) for i in range(len(LENGTHS)) for j in range(7) if x["mask"][i, j] > 0]
    vals = sorted(float(om[c]) for c in cells)
    n = len(vals)
    for i in range(len(LENGTHS)):
        for j in range(7):
            if x["mask"][i, j] == 0:
                assert float(lam[i, j]) == 1.0
                continue
            v = float(om[i, j])
            first, last = vals.index(v) + 1, n - vals[::-1].index(v)  # 1-based ranks of v's tie group
            u = ((first + last) / 2 - 1) / (n - 1)
            assert float(lam[i, j]) == pytest.approx(1 - 0.2 * u, rel=1e-12)
    assert float(metrics["steer/lambda_min"]) == pytest.approx(0.8)
    assert float(metrics["steer/lambda_max"]) == pytest.approx(1.0)


# ---- the earlier presets are numerically unchanged ------------------------------------------------------------

# λ on random_batch(5, LENGTHS, 7) in float64, computed with the code before issue 27 item 4 (commit 692f4c8):
# (Σ λ, min over valid tokens, λ[0, :4]).
PINNED = {
    "steer": (37.39209958141665, 0.8, [0.99983424353, 0.975937334384, 0.999761891821, 0.998922890582]),
    "steer_linear": (44.45831480427417, 0.8, [1.199702845717, 1.156338597262, 1.199573124161, 1.198068167586]),
    "steer_first_order": (36.462350017600066, 0.8, [0.991346921247, 0.996120749399, 0.990187287578, 0.964469590963]),
    "steer_quantile_k": (37.23667577377678, 0.8, [0.999769830098, 0.966742456767, 0.999669366961, 0.99850458778]),
    "steer_lmin07": (37.05349772238178, 0.7, [0.999735066296, 0.961815801664, 0.999619432558, 0.998278892176]),
    "steer_release_bfc8d2e": (
        37.415834827538795,
        0.8,
        [0.999961889342, 0.975991663149, 0.999906716389, 0.999453842734],
    ),
}


@pytest.mark.parametrize("preset", sorted(PINNED))
def test_earlier_steer_presets_give_the_same_lambda(preset: str) -> None:
    x = {k: v.double() for k, v in random_batch(5, LENGTHS, 7).items()}
    lam, metrics = lam_of(preset, x)
    total, low, head = PINNED[preset]
    assert float(lam.sum()) == pytest.approx(total, rel=1e-12)
    assert float(lam[x["mask"].bool()].min()) == pytest.approx(low, rel=1e-12)
    assert lam[0, :4].tolist() == pytest.approx(head, abs=1e-11)
    at_bound = float(metrics["steer/frac_lambda_at_bound"])
    assert at_bound == pytest.approx(float(metrics["steer/frac_lambda_at_min"] + metrics["steer/frac_lambda_at_max"]))

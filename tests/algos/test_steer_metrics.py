"""STEER's per-call metrics, computed as rows of one stacked tensor for speed (issue 14), are exactly those of
the per-key form they replaced (one masked mean / masked sum per key), bit for bit, in float32 and float64,
with padding, empty quadrants and an all-padding call."""

from __future__ import annotations

import pytest
import torch

from steer_bench.algos.base import TokenBatch, frac
from steer_bench.algos.entropy import QUADRANTS, omega, quadrant
from steer_bench.algos.interventions.steer import Steer, lambda_map, omega_range
from steer_bench.algos.stats import masked_quantile


def per_key_metrics(b: TokenBatch, om: torch.Tensor, lam: torch.Tensor, scale: float, weight_min: float) -> dict:
    """The implementation before issue 14 (interventions.py at c1b381e), kept as the reference."""
    mask = b.mask
    valid_lam = lam[mask] if mask.any() else torch.ones(1)
    abs_q = masked_quantile(om.abs(), mask, [0.5, 0.9, 0.99, 1.0])
    n = mask.sum().clamp(min=1)
    out = {
        "steer/lambda_mean": frac(lam, mask),
        "steer/lambda_min": valid_lam.min(),
        "steer/lambda_max": valid_lam.max(),
        "steer/frac_lambda_below_099": frac(lam < 0.99, mask),
        "steer/frac_lambda_at_min": frac(lam <= weight_min + 1e-6, mask),
        # issue 27 item 4 (added after issue 14): the share at the upper bound (1 for exp) and at either bound
        "steer/frac_lambda_at_max": frac(lam >= 1.0 - 1e-6, mask),
        "steer/frac_lambda_at_bound": frac((lam <= weight_min + 1e-6) | (lam >= 1.0 - 1e-6), mask),
        "steer/floor_active": torch.tensor(float(scale < 0.02)),
        "steer/omega_scale": torch.tensor(scale),
        "steer/omega_abs_p50": abs_q[0],
        "steer/omega_abs_p90": abs_q[1],
        "steer/omega_abs_p99": abs_q[2],
        "steer/omega_abs_max": abs_q[3],
    }
    label = quadrant(b.advantages, b.log_probs, b.old_entropy, mask)
    for q, qname in QUADRANTS.items():
        out[f"steer/frac_{qname}"] = frac(label == q, mask)
        out[f"steer/omega_sum_{qname}"] = (om * (label == q)).sum() / n
    return out


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["padded", "one_sign", "all_padding", "large"])
def test_stacked_metrics_equal_per_key_metrics(dtype: torch.dtype, case: str) -> None:
    g = torch.Generator().manual_seed(hash(case) % 1000)
    shape = (64, 512) if case == "large" else (16, 64)
    logp = -torch.rand(shape, generator=g, dtype=dtype) * 3
    old = logp + 0.05 * torch.randn(shape, generator=g, dtype=dtype)
    adv = torch.randn(shape[0], 1, generator=g, dtype=dtype).expand(shape).contiguous()
    if case == "one_sign":
        adv = adv.abs()  # the A < 0 quadrants are empty
    ent = torch.rand(shape, generator=g, dtype=dtype)
    mask = torch.rand(shape, generator=g) > 0.3
    if case == "all_padding":
        mask[:] = False
    b = TokenBatch(logp, old, adv, mask, None, ent)
    om = omega(adv, old, logp, ent, form="paper")
    lo, scale = omega_range(om.abs(), mask, k_norm="max")
    lam = lambda_map(
        om.abs(), mask, lo=lo, scale=scale, weight_min=0.8, weight_max=1.0, mapping="exp", omega_floor=0.02
    )
    steer = Steer(
        weight_min=0.8, weight_max=1.0, mapping="exp", scope="micro", omega_floor=0.02, k_norm="max", form="paper"
    )
    fast = steer._metrics(b, om, lam, scale)
    ref = per_key_metrics(b, om, lam, scale, 0.8)
    assert list(fast) == list(ref)
    for key, value in ref.items():
        assert torch.equal(fast[key].to(value.dtype), value), (key, float(fast[key]), float(value))

"""Rollout importance correction (TIS token / sequence, masking): the weights and metrics, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from steer_bench.algos.rollout_correction import RolloutCorrection

TOL = {"rtol": 1e-6, "atol": 1e-7}  # float32
OLD = torch.tensor([[-1.0, -1.0, -1.0], [-2.0, -2.0, 0.0]])
ROLLOUT = torch.tensor([[-2.0, -0.5, -1.0], [-2.1, -2.0, 5.0]])  # row 1's last token is padding
MASK = torch.tensor([[True, True, True], [True, True, False]])


def test_token_truncation() -> None:
    w, m = RolloutCorrection(level="token", mode="truncate", low=None, high=2.0).weights(OLD, ROLLOUT, MASK)
    want = torch.tensor([[2.0, math.exp(-0.5), 1.0], [math.exp(0.1), 1.0, 0.0]])  # e^1 capped at 2
    torch.testing.assert_close(w, want, **TOL)
    torch.testing.assert_close(m["rollout_corr/ratio_max"], torch.tensor(math.e), **TOL)
    torch.testing.assert_close(m["rollout_corr/frac_corrected"], torch.tensor(1 / 5))
    torch.testing.assert_close(m["rollout_corr/kl"], torch.tensor((-1.0 + 0.5 - 0.1) / 5), **TOL)


def test_sequence_level_is_the_product_over_valid_tokens() -> None:
    tis = RolloutCorrection(level="sequence", mode="truncate", low=None, high=1.2)
    w, _ = tis.weights(OLD, ROLLOUT, MASK)
    # row 0: e^{1 − 0.5 + 0} = e^0.5 → 1.2; row 1: e^{0.1} (padding's −5 ignored)
    torch.testing.assert_close(w, torch.tensor([[1.2] * 3, [math.exp(0.1)] * 2 + [0.0]]), **TOL)


def test_masking_outside_the_band() -> None:
    tok = RolloutCorrection(level="token", mode="mask", low=0.7, high=2.0)
    w, m = tok.weights(OLD, ROLLOUT, MASK)
    assert w.tolist() == [[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]]  # e^1 > 2, e^-0.5 < 0.7
    torch.testing.assert_close(m["rollout_corr/frac_corrected"], torch.tensor(2 / 5))
    seq = RolloutCorrection(level="sequence", mode="mask", low=None, high=1.5)
    assert seq.weights(OLD, ROLLOUT, MASK)[0].tolist() == [[0.0] * 3, [1.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"level": "seq"}, "level"),
        ({"mode": "clip"}, "mode"),
        ({"low": 0.5}, "no lower bound"),
        ({"high": 0.0}, "> 0"),
    ],
)
def test_bad_settings(kw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RolloutCorrection(**({"level": "token", "mode": "truncate", "low": None, "high": 2.0} | kw))

"""The analysis's statistics over token tables (one row per token, the probe's columns): how well each estimator
predicts the measured entropy change, and how tokens and ΔH split over the four quadrants. Pure numpy/pandas.

Every estimator predicts ΔH as −(η/L)·estimate (η the run's learning rate, L the probed mini-batch's valid
tokens; the paper's scale for Ω). Against the measured ΔH (n tokens):

    pearson, spearman   scipy.stats correlations of prediction and ΔH (NaN below 3 tokens or for constant input)
    abs_spearman        Spearman correlation of |prediction| and |ΔH|: STEER's λ uses |Ω| alone, so the size of
                        the change matters to it, not its sign
    sign                fraction of the tokens with ΔH ≠ 0 whose prediction has ΔH's sign (0 counts as wrong)
    rel_mse             Σ(pred − ΔH)² / Σ ΔH²                    at the paper's scale −η/L
    ls_factor           c = Σ pred·ΔH / Σ pred²                   least-squares multiple of −η/L (1: the scale holds)
    rel_mse_ls          Σ(c·pred − ΔH)² / Σ ΔH²                   at the fitted scale (= 1 − R² through the origin)

Quadrants (``algos.QUADRANTS``): ``tokens`` = the quadrant's share of the tokens, ``dh_share`` = Σ_q ΔH / Σ |ΔH|
(signed; over all quadrants the shares add up to net ΔH / Σ|ΔH|), ``dh_mean`` = mean ΔH of its tokens,
``as_expected`` = fraction of its tokens whose ΔH has the sign the quadrant predicts (− for pos_high and neg_low,
+ for pos_low and neg_high). Tokens with ln p + H = 0 exactly fall in no quadrant.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

from steer_bench.algos import QUADRANTS

# estimator -> token-table column
ESTIMATORS = {"paper": "omega", "first_order": "omega_first_order", "cov": "cov"}
ESTIMATOR_LABELS = {"paper": "Ω (paper)", "first_order": "p·Ω (first order)", "cov": "Cov (Cui et al.)"}
AGREEMENT_STATS = ("pearson", "spearman", "abs_spearman", "sign", "rel_mse", "ls_factor", "rel_mse_ls")
QUADRANT_NAMES = tuple(QUADRANTS[q] for q in sorted(QUADRANTS))
EXPECTED_SIGN = {"pos_high": -1.0, "pos_low": 1.0, "neg_high": 1.0, "neg_low": -1.0}
QUADRANT_STATS = ("tokens", "dh_share", "dh_mean", "as_expected")


def prediction(tokens: pd.DataFrame, estimator: str) -> np.ndarray:
    """−(η/L)·estimate per token (n,)."""
    scale = -(tokens["lr"] / tokens["n_tokens"]).to_numpy(np.float64)
    return scale * tokens[ESTIMATORS[estimator]].to_numpy(np.float64)


def agreement(pred: np.ndarray, dh: np.ndarray) -> dict[str, float]:
    """The statistics of the module docstring for predictions ``pred`` (n,) of the measured ``dh`` (n,)."""
    pred, dh = np.asarray(pred, dtype=np.float64), np.asarray(dh, dtype=np.float64)
    nan = math.nan
    varied = len(dh) >= 3 and np.ptp(pred) > 0 and np.ptp(dh) > 0
    abs_varied = len(dh) >= 3 and np.ptp(np.abs(pred)) > 0 and np.ptp(np.abs(dh)) > 0
    nonzero = dh != 0
    ss, pp = float((dh**2).sum()), float((pred**2).sum())
    ls = float((pred * dh).sum()) / pp if pp > 0 else nan
    return {
        "pearson": float(stats.pearsonr(pred, dh).statistic) if varied else nan,
        "spearman": float(stats.spearmanr(pred, dh).statistic) if varied else nan,
        "abs_spearman": float(stats.spearmanr(np.abs(pred), np.abs(dh)).statistic) if abs_varied else nan,
        "sign": float((np.sign(pred[nonzero]) == np.sign(dh[nonzero])).mean()) if nonzero.any() else nan,
        "rel_mse": float(((pred - dh) ** 2).sum()) / ss if ss > 0 else nan,
        "ls_factor": ls,
        "rel_mse_ls": float(((ls * pred - dh) ** 2).sum()) / ss if ss > 0 and pp > 0 else nan,
    }


def quadrant_stats(tokens: pd.DataFrame) -> dict[str, dict[str, float]]:
    """quadrant name -> the quadrant statistics of the module docstring (NaN where a quadrant is empty)."""
    dh = tokens["delta_h"].to_numpy(np.float64)
    label = tokens["quadrant"].to_numpy()
    total_abs = float(np.abs(dh).sum())
    out = {}
    for name in QUADRANT_NAMES:
        d = dh[label == name]
        out[name] = {
            "tokens": len(d) / len(dh) if len(dh) else math.nan,
            "dh_share": float(d.sum()) / total_abs if total_abs > 0 else math.nan,
            "dh_mean": float(d.mean()) if len(d) else math.nan,
            "as_expected": float((np.sign(d) == EXPECTED_SIGN[name]).mean()) if len(d) else math.nan,
        }
    return out


def step_metrics(tokens: pd.DataFrame) -> dict[str, float]:
    """Flat MLflow-safe metrics of one probed step: ``analysis/<estimator>/<stat>``, ``analysis/quadrant/<q>/...``."""
    dh = tokens["delta_h"].to_numpy(np.float64)
    out = {
        "analysis/tokens_adv": float(len(tokens)),
        "analysis/dh_mean": float(dh.mean()) if len(dh) else math.nan,
        "analysis/dh_abs_mean": float(np.abs(dh).mean()) if len(dh) else math.nan,
    }
    for est in ESTIMATORS:
        for stat, value in agreement(prediction(tokens, est), dh).items():
            out[f"analysis/{est}/{stat}"] = value
    for q, values in quadrant_stats(tokens).items():
        out |= {f"analysis/quadrant/{q}/{stat}": values[stat] for stat in ("tokens", "dh_share")}
    return out


def estimator_table(tokens: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """One row per group × estimator: group keys, ``estimator``, ``tokens``, ``steps``, ``eta_over_l`` (mean η/L
    over the group's steps) and :data:`AGREEMENT_STATS`, all tokens of the group pooled."""
    rows = []
    for key, group in tokens.groupby(list(by), sort=False):
        steps = group.drop_duplicates(["seed", "step"])
        for est in ESTIMATORS:
            rows.append(
                dict(zip(by, key, strict=True))
                | {
                    "estimator": est,
                    "tokens": len(group),
                    "steps": len(steps),
                    "eta_over_l": float((steps["lr"] / steps["n_tokens"]).mean()),
                    **agreement(prediction(group, est), group["delta_h"].to_numpy()),
                }
            )
    return pd.DataFrame(rows)


def quadrant_table(tokens: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """One row per group × quadrant: group keys, ``quadrant``, ``n`` (the group's tokens), :data:`QUADRANT_STATS`."""
    rows = []
    for key, group in tokens.groupby(list(by), sort=False):
        for q, values in quadrant_stats(group).items():
            rows.append(dict(zip(by, key, strict=True)) | {"quadrant": q, "n": len(group)} | values)
    return pd.DataFrame(rows)

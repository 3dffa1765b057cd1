"""From per-step metrics to per-run summaries and per-method tables (mean ± std over paired seeds).

Comparisons are the fair ones of the issue: at matched steps (the final policy) and at matched accuracy
(the entropy at the first step where the exact expected accuracy reaches a level, linearly interpolated
between evaluations), each also as a paired difference to the reference method with the same seed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from steer_bench.tree.config import StudyConfig

RUN_KEYS = ["setting", "method", "seed"]
MEAN_OVER_STEPS = [
    "loss/clipfrac",
    "loss/clipfrac_high",
    "loss/clipfrac_low",
    "steer/lambda_mean",
    "steer/frac_lambda_below_099",
    "steer/frac_lambda_at_min",
]
ESTIMATOR_STATS = ["pearson", "spearman", "rel_mse", "sign"]


def crossing(acc: np.ndarray, values: np.ndarray, level: float) -> tuple[float, float]:
    """(fractional index, interpolated value) where ``acc`` first reaches ``level``; (nan, nan) if never."""
    hit = np.flatnonzero(acc >= level)
    if len(hit) == 0:
        return math.nan, math.nan
    i = int(hit[0])
    if i == 0:
        return 0.0, float(values[0])
    frac = (level - acc[i - 1]) / (acc[i] - acc[i - 1])
    return i - 1 + frac, float(values[i - 1] + frac * (values[i] - values[i - 1]))


def level_key(x: float) -> str:
    return f"{x:g}".replace(".", "p")


def summarize_run(run: pd.DataFrame, levels: list[float], pass_k: list[int]) -> dict[str, float]:
    """One run's numbers: start/final exact metrics, matched-accuracy entropies, per-step means, probe stats."""
    run = run.sort_values("step")
    ev = run.dropna(subset=["exact/accuracy"])
    first, last = ev.iloc[0], ev.iloc[-1]
    out = {
        "initial_entropy": first["exact/entropy"],
        "initial_accuracy": first["exact/accuracy"],
        "final_entropy": last["exact/entropy"],
        "final_accuracy": last["exact/accuracy"],
        "final_step": last["step"],
        "sampled_accuracy_last5": run["rollout/accuracy"].dropna().tail(5).mean(),
    }
    for k in pass_k:
        out[f"initial_pass_at_{k}"] = first[f"exact/pass_at_{k}"]
        out[f"final_pass_at_{k}"] = last[f"exact/pass_at_{k}"]
    acc, ent, steps = ev["exact/accuracy"].to_numpy(), ev["exact/entropy"].to_numpy(), ev["step"].to_numpy()
    for level in levels:
        idx, h = crossing(acc, ent, level)
        out[f"entropy_at_acc_{level_key(level)}"] = h
        out[f"steps_to_acc_{level_key(level)}"] = np.interp(idx, np.arange(len(steps)), steps) if idx == idx else idx
    drops = -np.diff(ent) / np.maximum(np.diff(steps), 1)
    out["max_entropy_drop_per_step"] = float(drops.max()) if len(drops) else math.nan
    out["entropy_drop_per_step_std"] = float(drops.std()) if len(drops) else math.nan
    for key in MEAN_OVER_STEPS:
        out[key] = run[key].mean() if key in run else math.nan
    for prefix, name in (("probe", ""), ("probe_tiny", "tiny/")):
        out |= _probe_summary(run, prefix, name)
    return out


def _probe_summary(run: pd.DataFrame, prefix: str, name: str) -> dict[str, float]:
    """Mean of each probe statistic over the run's probes, and over its first / second half."""
    probes = run.dropna(subset=[f"{prefix}/states"]) if f"{prefix}/states" in run else run.iloc[:0]
    half = len(probes) // 2
    out = {}
    for est in ("paper", "first_order", "cov", "linear"):
        for stat in ESTIMATOR_STATS:
            col = f"{prefix}/{est}/{stat}"
            vals = probes[col] if col in probes else pd.Series(dtype=float)
            out[f"{name}{est}/{stat}"] = vals.mean()
            out[f"{name}{est}/{stat}_early"] = vals.iloc[: max(half, 1)].mean()
            out[f"{name}{est}/{stat}_late"] = vals.iloc[half:].mean()
    return out


def run_summaries(metrics: pd.DataFrame, cfg: StudyConfig) -> pd.DataFrame:
    """One row per (setting, method, seed), with paired differences to the reference method's same seed."""
    rows = []
    for (setting, method, seed), run in metrics.groupby(RUN_KEYS, sort=False):
        s = cfg.settings[setting]
        rows.append({"setting": setting, "method": method, "seed": seed} | summarize_run(
            run, s.matched_accuracy, s.train.pass_k
        ))  # fmt: skip
    df = pd.DataFrame(rows)
    ref = df[df["method"] == cfg.reference].set_index(["setting", "seed"])
    paired = [c for c in df.columns if c.startswith(("entropy_at_acc_", "final_")) and c != "final_step"]
    for col in paired:
        base = ref[col].reindex(pd.MultiIndex.from_frame(df[["setting", "seed"]])).to_numpy()
        df[f"delta_{col}"] = df[col].to_numpy() - base
    return df


def method_table(runs: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    """Mean, std and count over seeds of every numeric column, per (setting, method); methods in ``order``."""
    numeric = [c for c in runs.columns if c not in RUN_KEYS]
    grouped = runs.groupby(["setting", "method"], sort=False)[numeric]
    table = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=1), "n": grouped.count()}, axis=1)
    table = table.swaplevel(0, 1, axis=1).sort_index(axis=1, level=0, sort_remaining=False)
    rank = {m: i for i, m in enumerate(order)}
    return table.sort_index(key=lambda idx: idx.map(rank) if idx.name == "method" else idx)


def fmt(mean: float, std: float, digits: int = 3, *, general: bool = False) -> str:
    """'m ± s' with ``digits`` decimals (``general``: significant digits, for quantities spanning decades)."""
    if mean != mean:
        return "—"
    spec = f".{digits}g" if general else f".{digits}f"
    if std != std:
        return f"{mean:{spec}}"
    return f"{mean:{spec}} ± {std:{spec}}"

"""From per-step metrics to per-run summaries and per-method tables (mean ± std over paired seeds).

Comparisons are the fair ones of the issue: at matched steps (the final policy) and at matched accuracy
(the entropy at the first step where the exact expected accuracy reaches a level, linearly interpolated
between evaluations), each also as a paired difference to the reference method with the same seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from steer_bench.algos.advantages import range_linear_bounds
from steer_bench.config.method import MethodConfig
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
        rows.append(
            {"setting": setting, "method": method, "seed": seed}
            | summarize_run(run, s.matched_accuracy, s.train.pass_k)
        )
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


@dataclass(frozen=True)
class EntropyControl:
    """How a method steers the entropy, read from its preset (issue 27): the figure draws it, the table
    measures the final entropy against it. The tree passes k = step + 1 of T to the advantage estimator."""

    kind: str  # "set point" (EntroPIC) | "floor" (adaptive coefficient) | "band" (Entrocraft) | "schedule"
    target: float | None  # H* of a set point or floor, nats
    output: str | None  # the per-step metric of the controller's output (None: Entrocraft, whose output is a branch)
    bounds: tuple[tuple[float, float], tuple[float, float]] | None  # Entrocraft's (lower, upper) ranges

    def band_at(self, step: int, total_steps: int) -> tuple[float, float]:
        """Entrocraft's (l_k, u_k) for the update of row ``step`` (k = step + 1, as the loop passes it)."""
        assert self.bounds is not None
        lower, upper = self.bounds
        return range_linear_bounds(step + 1, total_steps, lower, upper)

    def distance(self, entropy: float, total_steps: int) -> float:
        """|H − H*|, or H's distance to the last update's band [l_T, u_T]; nan for a schedule (no target)."""
        if self.bounds is not None:
            lo, hi = self.band_at(total_steps - 1, total_steps)
            return max(lo - entropy, entropy - hi, 0.0)
        return abs(entropy - self.target) if self.target is not None else math.nan

    def target_text(self, total_steps: int) -> str:
        if self.bounds is not None:
            (l0, l1), (u0, u1) = self.bounds
            return f"band [{l0:g}→{l1:g}, {u0:g}→{u1:g}]"
        return f"{self.kind} {self.target:g}" if self.target is not None else "—"


def entropy_control(method: MethodConfig) -> EntropyControl | None:
    """The preset's entropy controller, target or bounds; None for a method without any."""
    loss, adv = method.loss, method.advantage
    if loss.entropic is not None:
        return EntropyControl("set point", float(loss.entropic["target"]), "loss/entropic_alpha", None)
    if loss.adaptive_entropy is not None:
        return EntropyControl("floor", float(loss.adaptive_entropy["target"]), "loss/entropy_coef", None)
    if loss.entropy_schedule is not None:
        return EntropyControl("schedule", None, "loss/entropy_coef", None)
    if adv.estimator == "grpo_range_linear":
        lower, upper = adv.params["lower_bound_range"], adv.params["upper_bound_range"]
        return EntropyControl("band", None, None, ((lower[0], lower[1]), (upper[0], upper[1])))
    return None


def _mean_se(values: pd.Series, digits: int = 3) -> str:
    n = values.count()
    se = values.std(ddof=1) / math.sqrt(n) if n > 1 else math.nan
    return fmt(values.mean(), se, digits)


def control_rows(
    runs: pd.DataFrame, controls: dict[str, EntropyControl], reference: str, total_steps: int
) -> list[dict[str, str]]:
    """One setting's final exact entropy against each controller's target, mean ± standard error over seeds;
    the reference's distance to the same target on the same seeds is the do-nothing comparison."""
    ref = runs[runs["method"] == reference].set_index("seed")["final_entropy"]
    do_nothing = {
        "method": reference,
        "target": "—",
        "H final": _mean_se(ref),
        "distance to target": "—",
        f"{reference}: distance to target": "—",
    }
    rows = [do_nothing]
    for method, control in controls.items():
        h = runs[runs["method"] == method].set_index("seed")["final_entropy"]
        dist = h.map(lambda x, c=control: c.distance(x, total_steps))
        ref_dist = ref.reindex(h.index).map(lambda x, c=control: c.distance(x, total_steps))
        row = {
            "method": method,
            "target": control.target_text(total_steps),
            "H final": _mean_se(h),
            "distance to target": _mean_se(dist) if dist.notna().any() else "—",
            f"{reference}: distance to target": _mean_se(ref_dist) if ref_dist.notna().any() else "—",
        }
        rows.append(row)
    return rows

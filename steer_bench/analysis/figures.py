"""Figures of the entropy-dynamics analysis (PNG, matplotlib's object API like ``steer_bench.report.figures``):
predicted vs measured ΔH per estimator, quadrant shares over training steps, and STEER's λ distribution."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullLocator

from steer_bench.analysis.stats import (
    ESTIMATOR_LABELS,
    ESTIMATORS,
    QUADRANT_NAMES,
    agreement,
    prediction,
    quadrant_table,
)
from steer_bench.files import atomic_path

QUADRANT_COLORS = {"pos_high": "tab:blue", "pos_low": "tab:orange", "neg_high": "tab:green", "neg_low": "tab:red"}
MAX_POINTS = 4000  # per scatter panel (a seeded subsample; the statistics use every token)


def _save(fig: Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)


def _symlog(ax: Axes, values: np.ndarray) -> None:
    """Symlog x and y on one scale (heavy-tailed data): linear below the 10th percentile of the non-zero |values|,
    ticks at 0 and ± powers of ten above it, at most ~4 per side."""
    nonzero = np.abs(values[values != 0])
    if not len(nonzero):
        return
    lt = float(np.quantile(nonzero, 0.1))
    lo, hi = math.floor(math.log10(lt)) + 1, math.ceil(math.log10(float(nonzero.max())))
    powers = 10.0 ** np.arange(lo, hi + 1, max(1, math.ceil((hi - lo + 1) / 4)))
    ticks = [*(-powers[::-1]), 0.0, *powers]
    for axis, set_scale in ((ax.xaxis, ax.set_xscale), (ax.yaxis, ax.set_yscale)):
        set_scale("symlog", linthresh=lt)
        axis.set_major_locator(FixedLocator(ticks))
        axis.set_minor_locator(NullLocator())


def scatter(tokens: pd.DataFrame, methods: list[str], labels: dict[str, str], path: Path) -> None:
    """Rows: methods; columns: estimators. x = the estimate at its least-squares scale c·(−η/L)·estimate (so that
    y = x is a perfect estimator), y = measured ΔH, coloured by quadrant; the panel title gives Pearson r and c."""
    fig = Figure(figsize=(4.2 * len(ESTIMATORS) + 1.5, 3.6 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), len(ESTIMATORS), squeeze=False)
    for i, m in enumerate(methods):
        group = tokens[tokens["method"] == m]
        shown = group.sample(n=MAX_POINTS, random_state=0) if len(group) > MAX_POINTS else group
        dh = shown["delta_h"].to_numpy(np.float64)
        for j, est in enumerate(ESTIMATORS):
            ax, stats = axes[i, j], agreement(prediction(group, est), group["delta_h"].to_numpy())
            factor = stats["ls_factor"] if math.isfinite(stats["ls_factor"]) else 1.0
            pred = factor * prediction(shown, est)
            for q in QUADRANT_NAMES:
                sel = shown["quadrant"].to_numpy() == q
                ax.scatter(pred[sel], dh[sel], s=4, alpha=0.5, color=QUADRANT_COLORS[q], label=q, linewidths=0)
            both = np.concatenate([pred, dh, [0.0]])
            ax.plot([both.min(), both.max()], [both.min(), both.max()], color="0.4", ls="--", lw=0.8, label="y = x")
            _symlog(ax, np.concatenate([pred, dh]))
            ax.axhline(0, color="0.7", linewidth=0.5)
            ax.axvline(0, color="0.7", linewidth=0.5)
            title = f"{labels.get(m, m)}: {ESTIMATOR_LABELS[est]}\nr = {stats['pearson']:.2f}, c = {factor:.3g}"
            ax.set_title(title, fontsize=9)
            ax.set_xlabel("c·(−η/L)·estimate", fontsize=8)
            ax.set_ylabel("measured ΔH", fontsize=8)
            ax.tick_params(labelsize=7)
    handles = {h.get_label(): h for h in axes[0, 0].get_children() if h.get_label() in [*QUADRANT_NAMES, "y = x"]}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8, markerscale=3)
    fig.suptitle("Per-token entropy change across one optimizer step: estimate (least-squares scale c) vs measurement")
    _save(fig, path)


def quadrant_shares(tokens: pd.DataFrame, methods: list[str], labels: dict[str, str], path: Path) -> None:
    """Rows: methods; left: share of tokens per quadrant over steps; right: the quadrant's share of Σ|ΔH| (signed)."""
    table = quadrant_table(tokens, by=("method", "step"))
    fig = Figure(figsize=(11, 3.4 * len(methods)), layout="constrained")
    axes = fig.subplots(len(methods), 2, squeeze=False)
    for i, m in enumerate(methods):
        rows = table[table["method"] == m]
        for q in QUADRANT_NAMES:
            r = rows[rows["quadrant"] == q].sort_values("step")
            for ax, col in zip(axes[i], ("tokens", "dh_share"), strict=True):
                ax.plot(r["step"], r[col], marker="o", markersize=3, color=QUADRANT_COLORS[q], label=q)
        axes[i, 0].set_ylabel(f"{labels.get(m, m)}\nshare of tokens")
        axes[i, 1].set_ylabel("Σ_q ΔH / Σ|ΔH|")
        axes[i, 1].axhline(0, color="0.6", linewidth=0.6)
        for ax in axes[i]:
            ax.set_xlabel("RL step")
            ax.grid(alpha=0.3)
    handles = {h.get_label(): h for h in axes[0, 0].get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    fig.suptitle("Quadrants (sign A × sign(ln p + H)) over training")
    _save(fig, path)


def lambda_distribution(tokens: pd.DataFrame, methods: list[str], labels: dict[str, str], path: Path) -> None:
    """Histogram of STEER's λ over the probed tokens (A ≠ 0), one step-line per method (log counts)."""
    fig = Figure(figsize=(8, 4), layout="constrained")
    ax = fig.subplots()
    lo = float(tokens["lam"].min()) if len(tokens) else 0.0
    bins = np.linspace(min(lo, 0.99), 1.0, 41)
    for m in methods:
        group = tokens[tokens["method"] == m]
        source = group["lambda_source"].iloc[0] if len(group) else ""
        suffix = "" if source == "method" else f" ({source})"
        ax.hist(group["lam"], bins=bins, histtype="step", linewidth=1.3, label=f"{labels.get(m, m)}{suffix}")
    ax.set_yscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("tokens")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle("STEER's token weight λ over the probed tokens")
    _save(fig, path)


FIGURES = {"scatter": scatter, "quadrants": quadrant_shares, "lambda": lambda_distribution}

"""The testbed's figures (matplotlib, Agg): seed bands per method, entropy-vs-accuracy paths, Ω vs ΔH,
quadrant shares. Each function draws one PNG from the study's DataFrames and writes it atomically."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from steer_bench.algos import QUADRANTS
from steer_bench.files import atomic_path
from steer_bench.tree.summary import EntropyControl

ESTIMATOR_LABELS = {
    "paper": "Ω (paper)",
    "first_order": "p·Ω (first order)",
    "cov": "covariance (Cui et al.)",
    "linear": "∇H·Δz (exact linearisation)",
}


def _save(fig: plt.Figure, path: Path) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def _band(metrics: pd.DataFrame, method: str, key: str, *, se: bool = False) -> pd.DataFrame:
    """Mean and std over seeds of ``key`` per step for one method (steps where it was recorded); with ``se``
    the "std" column is the standard error of the mean instead."""
    d = metrics[metrics["method"] == method].dropna(subset=[key])
    band = d.groupby("step")[key].agg(["mean", "std", "count"]).fillna(0.0)
    if se:
        band["std"] = band["std"] / np.sqrt(band["count"])
    return band


def _plot_band(ax: plt.Axes, band: pd.DataFrame, colour: str, label: str) -> None:
    ax.plot(band.index, band["mean"], color=colour, lw=1.4, label=label)
    ax.fill_between(band.index, band["mean"] - band["std"], band["mean"] + band["std"], color=colour, alpha=0.25)


def seed_bands(metrics: pd.DataFrame, methods: list[str], reference: str, key: str, ylabel: str, path: Path) -> None:
    """Small multiples: each method (colour) over the reference (grey), mean ± std over seeds vs step."""
    cols = min(5, len(methods))
    rows = math.ceil(len(methods) / cols)
    fig, axes = plt.subplots(
        rows,
        cols,
        figsize=(3.0 * cols, 2.3 * rows + 0.5),
        sharex=True,
        sharey=True,
        squeeze=False,
    )
    ref = _band(metrics, reference, key)
    for ax, method in zip(axes.flat, methods, strict=False):
        for name, band, colour in ((reference, ref, "0.6"), (method, _band(metrics, method, key), "C0")):
            _plot_band(ax, band, colour, name)
        ax.set_title(method, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(methods) :]:
        ax.axis("off")
    for ax in axes[:, 0]:
        ax.set_ylabel(ylabel, fontsize=8)
    for ax in axes[-1]:
        ax.set_xlabel("step", fontsize=8)
    fig.suptitle(f"{ylabel}: mean ± std over seeds (grey: {reference})", fontsize=10)
    fig.subplots_adjust(hspace=0.35, top=1 - 0.55 / fig.get_figheight())
    _save(fig, path)


def entropy_vs_accuracy(metrics: pd.DataFrame, methods: list[str], reference: str, path: Path) -> None:
    """The matched-accuracy view: mean exact entropy against mean exact accuracy, one path per method."""
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for i, method in enumerate(methods):
        acc, ent = _band(metrics, method, "exact/accuracy"), _band(metrics, method, "exact/entropy")
        strong = method == reference
        ax.plot(
            acc["mean"],
            ent["mean"],
            lw=2.4 if strong else 1.0,
            color="k" if strong else f"C{i % 10}",
            ls="-" if i < 10 or strong else "--",
            label=method,
            zorder=3 if strong else 2,
        )
    ax.set_xlabel("exact expected accuracy")
    ax.set_ylabel("exact expected token entropy (nats)")
    ax.legend(fontsize=7, ncol=2, loc="upper right")
    ax.set_title("entropy vs accuracy along training (mean over seeds)", fontsize=10)
    _save(fig, path)


def omega_vs_dh(points: pd.DataFrame, path: Path, max_points: int = 4000) -> None:
    """Scatter of each estimator (scaled by −η/N, summed per state) against the exact ΔH, per probe size."""
    probes = [p for p in ("probe", "probe_tiny") if p in set(points["probe"])]
    fig, axes = plt.subplots(len(probes), 4, figsize=(14, 3.6 * len(probes)), squeeze=False)
    for r, probe in enumerate(probes):
        d = points[points["probe"] == probe]
        if len(d) > max_points:
            d = d.sample(max_points, random_state=0)
        for c, (est, label) in enumerate(ESTIMATOR_LABELS.items()):
            ax = axes[r, c]
            x, y = d["delta_h"].to_numpy(), d[est].to_numpy()
            ax.scatter(x, y, s=3, alpha=0.4)
            lim = np.nanmax(np.abs(np.concatenate([x, y]))) if len(x) else 1.0
            ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.7)
            corr = np.corrcoef(x, y)[0, 1] if len(x) > 2 and np.ptp(y) > 0 else float("nan")
            ax.set_title(f"{label}\nPearson {corr:.2f}", fontsize=8)
            ax.set_xlabel(f"exact ΔH per state ({'training step' if probe == 'probe' else 'step × 1e-3'})", fontsize=7)
            ax.tick_params(labelsize=7)
        axes[r, 0].set_ylabel("predicted ΔH", fontsize=8)
    fig.suptitle("entropy-change estimates vs exact ΔH (reference method, all seeds and probes)", fontsize=10)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    _save(fig, path)


def quadrant_shares(metrics: pd.DataFrame, methods: list[str], path: Path) -> None:
    """Per method: share of tokens per quadrant (stacked) and each quadrant's signed share of ΔH, vs step."""
    fig, axes = plt.subplots(2, len(methods), figsize=(4.2 * len(methods), 6), squeeze=False, sharex=True)
    for c, method in enumerate(methods):
        d = metrics[metrics["method"] == method].dropna(subset=["quadrant/pos_high/tokens"])
        mean = d.groupby("step").mean(numeric_only=True)
        names = list(QUADRANTS.values())
        axes[0, c].stackplot(mean.index, [mean[f"quadrant/{q}/tokens"] for q in names], labels=names, alpha=0.8)
        for q in names:
            axes[1, c].plot(mean.index, mean[f"quadrant/{q}/dh"], label=q)
        axes[1, c].axhline(0, color="k", lw=0.5)
        axes[0, c].set_title(method, fontsize=9)
        axes[1, c].set_xlabel("step")
    axes[0, 0].set_ylabel("share of tokens (A ≠ 0)")
    axes[1, 0].set_ylabel("signed share of first-order ΔH")
    axes[0, -1].legend(fontsize=7, loc="upper right")
    fig.suptitle("quadrants: sign of A × sign of (ln p + H), mean over seeds", fontsize=10)
    _save(fig, path)


OUTPUT_LABELS = {"set point": "EntroPIC α_k", "floor": "applied bonus c_k", "schedule": "bonus β_k"}


def entropy_control(
    metrics: pd.DataFrame,
    controls: dict[str, EntropyControl],
    reference: str,
    steps: dict[str, int],
    path: Path,
) -> None:
    """Issue 27: each entropy controller's H_k (the step's mean π_old token entropy, the controllers' input)
    against its target or Entrocraft's annealed bounds, over the reference (grey), and below it the controller's
    output (Entrocraft: the share of seeds in each branch); one block per setting. Mean ± 1 SE over seeds."""
    methods = list(controls)
    fig = plt.figure(figsize=(3.2 * len(methods), 4.8 * len(steps) + 0.4), layout="constrained")
    blocks = fig.subfigures(len(steps), 1, squeeze=False)[:, 0]
    for block, (setting, total) in zip(blocks, steps.items(), strict=True):
        m = metrics[metrics["setting"] == setting]
        axes = block.subplots(2, len(methods), sharex=True, squeeze=False)
        ref = _band(m, reference, "rollout/entropy", se=True)
        for c, method in enumerate(methods):
            control, ax = controls[method], axes[0, c]
            _plot_band(ax, ref, "0.6", reference)
            _plot_band(ax, _band(m, method, "rollout/entropy", se=True), "C0", method)
            if control.target is not None:
                ax.axhline(control.target, color="C3", ls="--", lw=1.0, label=f"{control.kind} {control.target:g}")
            if control.bounds is not None:
                lo, hi = np.array([control.band_at(k, total) for k in range(total)]).T
                ax.plot(range(total), lo, color="C3", ls="--", lw=1.0, label="bounds l_k, u_k")
                ax.plot(range(total), hi, color="C3", ls="--", lw=1.0)
            if c:
                ax.sharey(axes[0, 0])
            ax.set_title(method, fontsize=9)
            _control_output(axes[1, c], m, method, control, total)
            axes[1, c].set_xlabel("step", fontsize=8)
        axes[0, 0].set_ylabel("H_k (nats)", fontsize=8)
        for ax in axes.flat:
            ax.legend(fontsize=6, loc="best")
            ax.tick_params(labelsize=7)
        block.suptitle(f"setting {setting}", fontsize=10)
    fig.suptitle(f"entropy against the controllers' targets: mean ± 1 SE over seeds (grey: {reference})", fontsize=11)
    _save(fig, path)


def _control_output(ax: plt.Axes, m: pd.DataFrame, method: str, control: EntropyControl, steps: int) -> None:
    """The controller's per-step output, or for Entrocraft the share of seeds whose H_k is above u_k (RAFT++:
    positive advantages only) or below l_k (NSR: negative only, none with 0/1 rewards)."""
    if control.output is not None:
        label = OUTPUT_LABELS[control.kind]
        _plot_band(ax, _band(m, method, control.output, se=True), "C2", label)
        ax.set_ylabel(label, fontsize=8)
    else:
        d = m[m["method"] == method].dropna(subset=["rollout/entropy"])
        lo, hi = np.array([control.band_at(int(k), steps) for k in d["step"]]).T
        h = d["rollout/entropy"].to_numpy()
        share = d.assign(raft=h > hi, nsr=h < lo).groupby("step")[["raft", "nsr"]].mean()
        ax.plot(share.index, share["raft"], color="C1", label="H_k > u_k (RAFT++)")
        ax.plot(share.index, share["nsr"], color="C4", label="H_k < l_k (NSR)")
        ax.set_ylim(-0.05, 1.05)
        ax.set_ylabel("share of seeds", fontsize=8)
    ax.axhline(0, color="k", lw=0.5)

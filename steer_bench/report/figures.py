"""Training-curve figures (PNG): every method on one plot, mean over seeds with a min–max band.

A figure is drawn when at least one run logged one of its metrics; otherwise it is skipped and the reason is
returned, so report.md can say so (a method that never logs ``steer/*`` simply has no λ curve).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure  # the object API: no pyplot state, no display backend (renders with Agg)
from matplotlib.ticker import MaxNLocator

from steer_bench.files import atomic_path
from steer_bench.report.collect import Curve, RunKey

# A panel: (metric keys read in order of preference, y-axis label).
Panel = tuple[tuple[str, ...], str]


@dataclass(frozen=True)
class FigureSpec:
    name: str
    title: str
    panels: tuple[Panel, ...]


FIGURES = (
    FigureSpec("entropy", "Rollout entropy", ((("rollout/entropy_mean",), "token-mean entropy (nats)"),)),
    FigureSpec(
        "probe_entropy",
        "Entropy on the probe set (fixed held-out prompts and sampling seed; steer_bench.train.probeset)",
        (
            (("probe/entropy",), "token-mean entropy, all response tokens (nats)"),
            (("probe/entropy_fork",), "entropy at the strategy-fork tokens (nats)"),
            (("probe/avg_at_k",), "probe accuracy (avg@n)"),
        ),
    ),
    FigureSpec("val_accuracy", "Validation accuracy during training", ((("val/avg_at_k",), "val avg@k"),)),
    FigureSpec("response_length", "Response length", ((("rollout/response_len_mean",), "mean tokens"),)),
    FigureSpec(
        "clip_fractions",
        "Clipped token fractions",
        (
            (("loss/clipfrac_high",), "high side (r > 1+ε_high, A > 0)"),
            (("loss/clipfrac_low",), "low side (r < 1−ε_low, A < 0)"),
        ),
    ),
    FigureSpec(
        "steer_lambda",
        "STEER token weights λ",
        (
            (("steer/lambda_mean",), "mean λ"),
            (("steer/lambda_min",), "min λ"),
            (("steer/frac_lambda_below_099", "steer/frac_below_0_99"), "fraction of tokens with λ < 0.99"),
        ),
    ),
)


def seed_band(curves: list[Curve]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(steps, mean, min, max) over seeds at each step any seed logged (a step uses the seeds that have it)."""
    by_step: dict[int, list[float]] = {}
    for curve in curves:
        for step, value in curve:
            by_step.setdefault(step, []).append(value)
    steps = np.array(sorted(by_step))
    vals = [np.array(by_step[s]) for s in steps]
    return steps, *(np.array([f(v) for v in vals]) for f in (np.mean, np.min, np.max))


def _panel_curves(curves: dict[RunKey, dict[str, Curve]], method: str, keys: tuple[str, ...]) -> list[Curve]:
    out = []
    for (m, _seed), run in sorted(curves.items(), key=lambda kv: kv[0][1]):
        curve = next((run[k] for k in keys if run.get(k)), None)
        if m == method and curve:
            out.append(curve)
    return out


def draw(
    spec: FigureSpec, curves: dict[RunKey, dict[str, Curve]], methods: list[str], labels: dict[str, str], path: Path
) -> bool:
    """Draw one figure into ``path``; False (nothing written) when no run logged any of its metrics."""
    data = {(m, i): _panel_curves(curves, m, keys) for m in methods for i, (keys, _) in enumerate(spec.panels)}
    if not any(data.values()):
        return False
    colors = colormaps["tab20" if len(methods) > 10 else "tab10"]
    fig = Figure(figsize=(5 * len(spec.panels) + 2.5, 4), layout="constrained")
    axes = fig.subplots(1, len(spec.panels), squeeze=False)
    for i, (ax, (_keys, ylabel)) in enumerate(zip(axes[0], spec.panels, strict=True)):
        for j, m in enumerate(methods):
            if not data[(m, i)]:
                continue
            steps, mean, lo, hi = seed_band(data[(m, i)])
            n = len(data[(m, i)])
            ax.plot(steps, mean, color=colors(j), label=f"{labels[m]} ({n} seed{'s' if n > 1 else ''})")
            if n > 1:
                ax.fill_between(steps, lo, hi, color=colors(j), alpha=0.2, linewidth=0)
        ax.set_xlabel("RL step")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes[0] for h in ax.get_lines()}  # one entry per method, all panels
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    fig.suptitle(f"{spec.title} (mean over seeds, band: min–max)")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return True


def draw_all(
    curves: dict[RunKey, dict[str, Curve]], methods: list[str], labels: dict[str, str], out_dir: Path
) -> dict[str, str | None]:
    """Every figure of ``FIGURES``: name -> relative PNG path, or None when skipped (no run logged its metrics)."""
    written: dict[str, str | None] = {}
    for spec in FIGURES:
        path = out_dir / "figures" / f"{spec.name}.png"
        ok = draw(spec, curves, methods, labels, path)
        if not ok:
            path.unlink(missing_ok=True)  # an earlier report's figure would contradict this report.md
        written[spec.name] = f"figures/{spec.name}.png" if ok else None
    return written


def draw_pass_at_k(
    pass_at: dict[tuple[str, int | None, str], dict[int, float]], rows: list[str], labels: dict[str, str], path: Path
) -> bool:
    """pass@k against k (log scale) per row, one panel per benchmark: mean over seeds, band min–max; False (nothing
    written) when no evaluation reported pass@k beyond k = 1."""
    benches = sorted({b for (_, _, b), v in pass_at.items() if len(v) > 1})
    if not benches:
        return False
    colors = colormaps["tab20" if len(rows) > 10 else "tab10"]
    fig = Figure(figsize=(5 * len(benches) + 2.5, 4), layout="constrained")
    axes = fig.subplots(1, len(benches), squeeze=False)[0]
    for ax, bench in zip(axes, benches, strict=True):
        for j, row in enumerate(rows):
            curves = [v for (r, _, b), v in pass_at.items() if r == row and b == bench and len(v) > 1]
            if not curves:
                continue
            ks = sorted(set.intersection(*(set(c) for c in curves)))
            vals = np.array([[c[k] for k in ks] for c in curves])
            n = len(curves)
            ax.plot(ks, vals.mean(0), marker="o", ms=3, color=colors(j), label=f"{labels[row]} ({n})")
            if n > 1:
                ax.fill_between(ks, vals.min(0), vals.max(0), color=colors(j), alpha=0.2, linewidth=0)
        ax.set_xscale("log", base=2)
        ax.set(xlabel="k (samples per problem)", ylabel=f"pass@k, {bench}")
        ax.grid(alpha=0.3)
    handles = {h.get_label(): h for ax in axes for h in ax.get_lines()}
    fig.legend(list(handles.values()), list(handles), loc="outside right upper", fontsize=8)
    fig.suptitle(
        "pass@k on the held-out problems\n(unbiased estimator; mean over seeds, band: min–max; (n): seeds)",
        fontsize=10,
    )
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return True

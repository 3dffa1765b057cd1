"""`steer-bench analyze`: the estimator-accuracy table, quadrant shares and figures from runs' probe files.

Reads ``<run>/analysis/step_*.parquet`` (written by :class:`~steer_bench.analysis.EntropyProbe`) of one or many
run directories and writes, atomically, into the output folder (by default ``results/<exp>/analysis/``)::

    estimators.csv|md   per method × estimator (paper Ω, p·Ω, covariance) against the measured ΔH
    quadrants.csv|md    per method × quadrant, over all analysed steps (``step`` empty) and per step
    figures/*.png       scatter (estimate vs ΔH), quadrants (shares over steps), lambda (λ distribution)
    analysis.md         the section ``steer-bench report`` includes verbatim (links relative to this folder)

Seeds of a method are pooled; every saved token counts once (the probe saves a uniform sample of at most
``analysis.max_tokens`` tokens with A ≠ 0 per step).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from steer_bench import files
from steer_bench.analysis import figures
from steer_bench.analysis.stats import (
    AGREEMENT_STATS,
    ESTIMATOR_LABELS,
    EXPECTED_SIGN,
    QUADRANT_NAMES,
    QUADRANT_STATS,
    estimator_table,
    quadrant_stats,
    quadrant_table,
)
from steer_bench.config import read_yaml
from steer_bench.errors import SteerBenchError
from steer_bench.inputs import read_parquet

COLUMNS = (
    "method",
    "seed",
    "step",
    "row",
    "pos",
    "adv",
    "old_logp",
    "logp",
    "logp_after",
    "old_entropy",
    "entropy",
    "entropy_after",
    "delta_h",
    "omega",
    "omega_first_order",
    "cov",
    "lam",
    "quadrant",
    "lr",
    "n_tokens",
    "lambda_source",
)
MAX_WINDOWS = 8  # rows of the "over training" tables in quadrants.md (every step is in quadrants.csv)


@dataclass(frozen=True)
class Runs:
    tokens: pd.DataFrame
    """Every run's token table, with a ``run`` column (the run directory)."""
    methods: list[str]
    """Methods in order of first appearance."""
    labels: dict[str, str]
    """Method -> display label (``method.yaml``'s label; the name when absent)."""
    without: list[Path]
    """Run directories with no analysis files."""
    files: dict[str, int]
    """Run directory -> analysis files read (steps whose first mini-batch had no A ≠ 0 token add none)."""


def load_runs(dirs: list[Path]) -> Runs:
    """Read every run's probe files; a bad file is an error naming it, runs without files are listed."""
    frames, labels, without, counts = [], {}, [], {}
    for run in dirs:
        files = sorted(run.glob("analysis/step_*.parquet"))
        if not files:
            without.append(run)
            continue
        counts[str(run)] = len(files)
        for f in files:
            frames.append(_read(f).assign(run=str(run)))
        if (run / "method.yaml").is_file():
            meta = read_yaml(run / "method.yaml")
            labels[str(meta.get("name"))] = str(meta.get("label", meta.get("name")))
    if not frames:
        raise SteerBenchError(
            "no analysis files (analysis/step_*.parquet) in any of: "
            + ", ".join(str(d) for d in dirs)
            + "; train with analysis.every_n_steps > 0"
        )
    tokens = pd.concat(frames, ignore_index=True)  # may be empty: see analyze()
    methods = list(dict.fromkeys(tokens["method"]))
    return Runs(tokens, methods, {m: labels.get(m, m) for m in methods}, without, counts)


def _read(path: Path) -> pd.DataFrame:
    frame = read_parquet(path, what="probe file", allow_empty=True)  # no token with A ≠ 0 at that step
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise SteerBenchError(f"{path}: not a probe file: missing column(s) {missing}")
    return frame


# ---------------------------------------------------------------------------------------------- Markdown
def _cell(x: object, digits: int = 3) -> str:
    if isinstance(x, float | np.floating):
        return "—" if math.isnan(x) else f"{x:.{digits}g}"
    return str(x)


def markdown(header: list[str], rows: list[list[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join([*lines, *("| " + " | ".join(_cell(x) for x in r) + " |" for r in rows)]) + "\n"


def estimators_markdown(table: pd.DataFrame, labels: dict[str, str]) -> str:
    header = [
        "Method",
        "Estimator",
        "tokens",
        "Pearson",
        "Spearman",
        "Spearman (abs)",
        "sign",
        "rel. MSE",
        "LS factor",
        "rel. MSE (LS)",
    ]
    rows = [
        [labels[r.method], ESTIMATOR_LABELS[r.estimator], r.tokens, *(getattr(r, s) for s in AGREEMENT_STATS)]
        for r in table.itertuples()
    ]
    return markdown(header, rows) + (
        "\nPrediction = −(η/L)·estimate (η the learning rate, L the mini-batch's valid tokens); rel. MSE = "
        "Σ(pred − ΔH)²/ΣΔH² at that scale; LS factor = the least-squares multiple of −η/L (1: the paper's scale "
        "holds; AdamW's step is not −η∇); rel. MSE (LS) at the fitted scale; sign = agreement on tokens with ΔH ≠ 0; "
        "Spearman (abs) ranks |pred| against |ΔH| (STEER's λ uses |Ω| alone).\n"
    )


def quadrants_markdown(tokens: pd.DataFrame, overall: pd.DataFrame, methods: list[str], labels: dict[str, str]) -> str:
    header = ["Method", "Quadrant", "ΔH if alone", "tokens", "ΔH share", "mean ΔH", "ΔH sign as expected"]
    rows = [
        [
            labels[r.method],
            r.quadrant,
            "−" if EXPECTED_SIGN[r.quadrant] < 0 else "+",
            f"{r.tokens:.1%}",
            r.dh_share,
            r.dh_mean,
            r.as_expected,
        ]
        for r in overall.itertuples()
    ]
    out = [markdown(header, rows)]
    out.append(
        "\ntokens = share of the probed tokens (A ≠ 0); ΔH share = Σ_q ΔH / Σ|ΔH| (signed); 'ΔH if alone' = the "
        "direction the first-order account predicts.\n"
    )
    out.append("\n#### Over training (share of tokens / ΔH share per quadrant)\n")
    for m in methods:
        group = tokens[tokens["method"] == m]
        steps = np.sort(group["step"].unique())
        windows = np.array_split(steps, min(MAX_WINDOWS, len(steps)))
        rows = []
        for w in windows:
            q = quadrant_stats(group[group["step"].isin(w)])
            span = f"{w[0]}" if len(w) == 1 else f"{w[0]}–{w[-1]}"
            rows.append([span, *(f"{q[n]['tokens']:.1%} / {_cell(q[n]['dh_share'], 2)}" for n in QUADRANT_NAMES)])
        out += [f"\n{labels[m]}:\n\n", markdown(["steps", *QUADRANT_NAMES], rows)]
    return "".join(out)


def lambda_markdown(tokens: pd.DataFrame, methods: list[str], labels: dict[str, str]) -> str:
    rows = []
    for m in methods:
        lam = tokens.loc[tokens["method"] == m, "lam"].to_numpy()
        source = tokens.loc[tokens["method"] == m, "lambda_source"].iloc[0]
        rows.append([labels[m], source, lam.mean(), (lam < 0.99).mean(), (lam < 0.9).mean(), lam.min()])
    return markdown(["Method", "λ parameters", "mean λ", "λ < 0.99", "λ < 0.9", "min λ"], rows)


# ---------------------------------------------------------------------------------------------- the command
def analyze(dirs: list[Path], out: Path, *, command: str) -> Runs:
    """Write every file of the module docstring into ``out`` from the probe files of ``dirs``.

    Probe files that hold no token with A ≠ 0 (every group's rewards equal at the analysed steps: a policy
    that solves, or fails, all of a step's first mini-batch) are a result, not an error: the section then says
    so and why, the tables are empty and there are no figures, so the pipeline's report still completes."""
    runs = load_runs(dirs)
    tokens, methods, labels = runs.tokens, runs.methods, runs.labels
    if tokens.empty:
        return _nothing_to_analyse(runs, out, command)
    est = estimator_table(tokens)
    overall = quadrant_table(tokens)
    per_step = quadrant_table(tokens, by=("method", "step"))
    est_csv = est.assign(label=est["method"].map(labels))
    files.write_text(out / "estimators.csv", est_csv.to_csv(index=False))
    quad_csv = pd.concat([overall.assign(step=pd.NA), per_step], ignore_index=True)
    quad_csv = quad_csv[["method", "step", "quadrant", "n", *QUADRANT_STATS]]
    files.write_text(out / "quadrants.csv", quad_csv.to_csv(index=False))
    est_md, quad_md = estimators_markdown(est, labels), quadrants_markdown(tokens, overall, methods, labels)
    files.write_text(out / "estimators.md", est_md)
    files.write_text(out / "quadrants.md", quad_md)
    for name, draw in figures.FIGURES.items():
        draw(tokens, methods, labels, out / "figures" / f"{name}.png")
    files.write_text(out / "analysis.md", document(runs, est_md, quad_md, command))
    return runs


NOTHING_TO_ANALYSE = (
    "**Nothing to analyse**: the probe files hold no token with A ≠ 0. At every analysed step the first "
    "mini-batch's groups had equal rewards (all responses right, or all wrong), so no token had a gradient and no "
    "entropy change could be attributed to an advantage. Analyse more steps (`analysis.every_n_steps`), larger "
    "groups (`rollout.n`), or a policy whose groups disagree more often."
)


def _nothing_to_analyse(runs: Runs, out: Path, command: str) -> Runs:
    """The files of :func:`analyze` for probe files without a token: header-only tables and the reason."""
    files.write_text(
        out / "estimators.csv",
        ",".join(["method", "estimator", "tokens", "steps", "eta_over_l", *AGREEMENT_STATS, "label"]) + "\n",
    )
    files.write_text(out / "quadrants.csv", ",".join(["method", "step", "quadrant", "n", *QUADRANT_STATS]) + "\n")
    for name in ("estimators.md", "quadrants.md"):
        files.write_text(out / name, NOTHING_TO_ANALYSE + "\n")
    lines = [
        f"Produced by `{command}` from {len(runs.files) + len(runs.without)} run(s):",
        "",
        *(f"- `{run}`: {n} analysed step(s), no token with A ≠ 0" for run, n in runs.files.items()),
        *(f"- `{run}`: no analysis files" for run in runs.without),
        "",
        NOTHING_TO_ANALYSE,
    ]
    files.write_text(out / "analysis.md", "\n".join(lines) + "\n")
    return runs


def document(runs: Runs, est_md: str, quad_md: str, command: str) -> str:
    t = runs.tokens
    per_run = t.groupby("run", sort=False).agg(
        method=("method", "first"), seed=("seed", "first"), steps=("step", "nunique"), tokens=("step", "size")
    )
    lines = [
        f"Produced by `{command}` from {len(per_run)} run(s):",
        "",
        *(
            f"- `{run}` ({r.method}, seed {r.seed}): {runs.files[run]} analysed step(s), {r.steps} with tokens "
            f"(A ≠ 0), {r.tokens} tokens"
            for run, r in per_run.iterrows()
        ),
        *(f"- `{run}`: no analysis files" for run in runs.without),
        "",
        "At each analysed step the trainer recomputed every token's entropy right before and right after the first "
        "optimizer step (eval mode, same inputs) and saved, for a sample of the tokens with A ≠ 0, the measured "
        "ΔH beside the paper's Ω, its first-order form p·Ω and Cui et al.'s covariance. Seeds are pooled.",
        "",
        "### Estimator accuracy",
        "",
        est_md,
        "![Estimate vs measured ΔH](figures/scatter.png)",
        "",
        "### Quadrants",
        "",
        quad_md,
        "![Quadrant shares over training](figures/quadrants.png)",
        "",
        "### STEER's λ",
        "",
        lambda_markdown(t, runs.methods, runs.labels),
        "λ of the method's own STEER parameters, or, for other methods, of the release's defaults (λ_min 0.8, "
        "exponential map, per micro-batch): what STEER would have applied to the same tokens.",
        "",
        "![λ distribution](figures/lambda.png)",
        "",
        "Tables also as [estimators.csv](estimators.csv) and [quadrants.csv](quadrants.csv).",
    ]
    return "\n".join(lines) + "\n"

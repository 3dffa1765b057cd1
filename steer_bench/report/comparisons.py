"""The comparisons a study at small scale needs beyond the main table, as Markdown sections of report.md:

- **against the base model, per seed**: Δ = accuracy(run) − accuracy(base) on the benchmarks' Avg, with
  SE = √(SE_run² + SE_base²) from the two evaluations' standard errors over problems and z = Δ / SE. Both
  evaluations score the same problems, whose shared difficulty makes the two accuracies positively correlated,
  so this SE over-states the SE of the difference: z is conservative.
- **paired against the baseline method** (:mod:`steer_bench.report.paired_table`): accuracy per benchmark and on
  the Avg (points) and the final probe-set entropy (all tokens and the strategy-fork tokens, nats;
  :mod:`steer_bench.train.probeset`): over seeds (paired t-test), or with one seed a paired bootstrap over
  problems; Holm-corrected significance across the methods; the seeds a gap on the Avg needs.
- **the entropy on the probe set, first → last measurement**, per method (mean over seeds) and the ratio
  last / first (min–max over seeds): whether the entropy collapsed, and at which tokens.

A section is left out when its inputs are absent (no base row, no probe metrics); the paired section stays
without runs, for its line on the seeds a gap needs (from a prior).
"""

from __future__ import annotations

import math
import statistics

from steer_bench.evaluation.metrics import combined_se
from steer_bench.experiment import ExperimentConfig
from steer_bench.report import paired_table
from steer_bench.report.collect import Results

PASS_AT_K_TITLE = "pass@k on the held-out problems"
PROBE = (("probe/entropy", "all tokens"), ("probe/entropy_fork", "fork tokens"))


def avg_accuracy(exp: ExperimentConfig, results: Results, row: str, seed: int | None) -> tuple[float, float] | None:
    """(accuracy, its SE) of one evaluation on the unweighted mean over the benchmarks, or None if incomplete."""
    keys = [(row, seed, b) for b in exp.data.benchmarks]
    if any(k not in results.acc for k in keys):
        return None
    acc = statistics.fmean(results.acc[k] for k in keys)
    return acc, combined_se([results.acc_se.get(k, math.nan) for k in keys])


def vs_base_section(exp: ExperimentConfig, results: Results, labels: dict[str, str], *, base: str) -> list[str]:
    b = avg_accuracy(exp, results, base, None)
    if b is None:
        return []
    head = " | ".join(f"seed {s}" for s in exp.seeds)
    out = [f"### Each run against `{base}`", "", f"| Method | {head} |", "|---" + "|---:" * len(exp.seeds) + "|"]
    for m in exp.methods:
        cells = []
        for s in exp.seeds:
            r = avg_accuracy(exp, results, m, s)
            if r is None:
                cells.append("—")
                continue
            delta, se = r[0] - b[0], math.hypot(r[1], b[1])
            cells.append(f"{100 * delta:+.1f} (SE {100 * se:.1f}, z {delta / se:.1f})" if se > 0 else f"{delta:+.1f}")
        out.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    note = (
        f"Δ accuracy in points against `{base}` ({100 * b[0]:.1f}); SE = √(SE_run² + SE_base²) of the two "
        "evaluations (standard errors over problems); z = Δ / SE, conservative (both evaluations score the same "
        "problems)."
    )
    return [*out, "", note, ""]


def collapse_section(exp: ExperimentConfig, results: Results, labels: dict[str, str]) -> list[str]:
    rows = []
    for m in exp.methods:
        cells = []
        for key, _ in PROBE:
            curves = [c for s in exp.seeds if (c := results.curves.get((m, s), {}).get(key))]
            if not curves:
                cells.append("—")
                continue
            first, last = statistics.fmean(c[0][1] for c in curves), statistics.fmean(c[-1][1] for c in curves)
            ratios = [c[-1][1] / c[0][1] for c in curves if c[0][1] > 0]
            span = f"{min(ratios):.2f}–{max(ratios):.2f}" if ratios else "—"
            cells.append(f"{first:.4f} → {last:.4f} (×{span})")
        if any(c != "—" for c in cells):
            rows.append(f"| {labels[m]} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    steps = sorted({c[0][0] for (m, _), run in results.curves.items() for k, _ in PROBE if (c := run.get(k))})
    out = ["### Entropy on the probe set, first → last measurement", ""]
    out += ["| Method | " + " | ".join(f"entropy, {name}" for _, name in PROBE) + " |", "|---|---:|---:|", *rows]
    note = (
        "Mean over seeds of the first (step " + ", ".join(map(str, steps)) + ") and the last measurement, in "
        "nats; ×: last / first per seed, min–max over seeds."
    )
    return [*out, "", note, ""]


def sections(exp: ExperimentConfig, results: Results, labels: dict[str, str], pass_at_k: str | None) -> list[str]:
    """The comparisons of the module docstring and the pass@k figure (its path relative to report.md, or None),
    under one heading; empty when none applies."""
    base = next((r.name for r in exp.eval_only if r.name == "base"), None)
    body = [
        *(vs_base_section(exp, results, labels, base=base) if base else []),
        *paired_table.section(exp, results, labels, baseline="grpo"),
        *collapse_section(exp, results, labels),
        *([f"### {PASS_AT_K_TITLE}", "", f"![{PASS_AT_K_TITLE}]({pass_at_k})", ""] if pass_at_k else []),
    ]
    return ["## Comparisons", "", *body] if body else []

"""The "Paired against the baseline" section of report.md: per benchmark and on the Avg, plus the probe entropy.

- Two or more seeds: the paired difference over matched seeds (:mod:`steer_bench.report.paired`).
- One seed: a paired bootstrap over problems (:mod:`steer_bench.report.bootstrap`) for the accuracy columns.
- Per column, the methods compared against the baseline form one family: a cell is starred when its difference
  is significant at α after Holm's correction (:func:`steer_bench.report.paired.holm`).
- Under the table, the seeds a gap of 1, 2 and 4 points on the Avg needs at 80% power
  (:mod:`steer_bench.report.power`), from the measured paired-difference SD pooled over the methods, or from a
  prior where no spread is measured.
"""

from __future__ import annotations

import math
import statistics

from steer_bench.experiment import ExperimentConfig
from steer_bench.report.bootstrap import RESAMPLES, SEED, Bootstrap, bootstrap, matched_diffs
from steer_bench.report.collect import Results, per_problem_accuracy
from steer_bench.report.labels import AVG, benchmark_label, order_benchmarks
from steer_bench.report.paired import Paired, holm, paired, paired_against
from steer_bench.report.power import seeds_needed

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
GAPS = (1, 2, 4)  # points on the Avg
PROBE = (("probe/entropy", "all tokens"), ("probe/entropy_fork", "fork tokens"))
# An independent 1.5B STEER reproduction's spread, for configs whose own runs measure none (yet).
PRIOR_SD = 0.9
PRIOR = f"prior: Parkdev22222/entropy_collapse, paired-difference SD ≈ {PRIOR_SD} points at 1.5B"

Stat = Paired | Bootstrap | None
Columns = dict[str, dict[str, Stat]]  # column key (benchmark, AVG or probe key) -> method -> its statistic


def section(exp: ExperimentConfig, results: Results, labels: dict[str, str], *, baseline: str) -> list[str]:
    if baseline not in exp.methods or len(exp.methods) < 2:
        return []
    others = [m for m in exp.methods if m != baseline]
    benches = order_benchmarks(list(exp.data.benchmarks))
    acc_cols = [*(benches if len(benches) > 1 else []), AVG]
    one_seed = len(exp.seeds) == 1
    cols: Columns = (
        _bootstrap_cols(exp, others, baseline, benches, acc_cols)
        if one_seed
        else _seed_cols(exp, results, baseline, benches, acc_cols)
    )
    cols |= _probe_cols(exp, results, baseline)
    cols = {k: v for k, v in cols.items() if k in acc_cols or any(s is not None and _n(s) for s in v.values())}
    how = "one seed: paired bootstrap over problems" if one_seed else "same seed, mean over seeds"
    out = [f"### Paired against `{baseline}` ({how})", ""]
    if any(s is not None and _n(s) for v in cols.values() for s in v.values()):
        titles = [
            f"Δ {benchmark_label(k)} (points)" if k in acc_cols else f"Δ final entropy, {dict(PROBE)[k]} (nats)"
            for k in cols
        ]
        out += ["| Method | " + " | ".join(titles) + " |", "|---" + "|---:" * len(cols) + "|"]
        marked = {k: _holm_cells(v, points=k in acc_cols) for k, v in cols.items()}
        out += [f"| {labels[m]} | " + " | ".join(marked[k][m] for k in cols) + " |" for m in others]
        out += ["", _note(baseline, len(others), one_seed)]
    else:
        out.append("No paired runs yet.")
    sds = [s for s in cols[AVG].values() if isinstance(s, Paired) and s.n >= 2]
    return [*out, "", _seeds_line(sds), ""]


def _seed_cols(
    exp: ExperimentConfig, results: Results, baseline: str, benches: list[str], acc_cols: list[str]
) -> Columns:
    out = {}
    for col in acc_cols:
        parts = benches if col == AVG else [col]
        values = {
            m: {
                s: 100 * statistics.fmean(results.acc[(m, s, b)] for b in parts)
                for s in exp.seeds
                if all((m, s, b) in results.acc for b in parts)
            }
            for m in exp.methods
        }
        out[col] = dict(paired_against(values, baseline=baseline, confidence=CONFIDENCE, methods=exp.methods))
    return out


def _bootstrap_cols(
    exp: ExperimentConfig, others: list[str], baseline: str, benches: list[str], acc_cols: list[str]
) -> Columns:
    seed = exp.seeds[0]
    base = {b: per_problem_accuracy(exp, baseline, seed, b) for b in benches}
    out: Columns = {col: {} for col in acc_cols}
    for m in others:
        diffs = {}
        for b in benches:
            acc = per_problem_accuracy(exp, m, seed, b)
            d = matched_diffs(acc, base[b]) if acc is not None and base[b] is not None else []
            if d:
                diffs[b] = [100 * x for x in d]
        for col in out:
            parts = benches if col == AVG else [col]
            ok = all(b in diffs for b in parts)
            out[col][m] = bootstrap([diffs[b] for b in parts], confidence=CONFIDENCE) if ok else None
    return out


def _probe_cols(exp: ExperimentConfig, results: Results, baseline: str) -> Columns:
    out = {}
    for key, _ in PROBE:
        final = {
            m: {s: c[-1][1] for s in exp.seeds if (c := results.curves.get((m, s), {}).get(key))} for m in exp.methods
        }
        out[key] = {m: paired(final[m], final[baseline], confidence=CONFIDENCE) for m in exp.methods if m != baseline}
    return out


def _n(s: Paired | Bootstrap) -> int:
    return s.n if isinstance(s, Paired) else s.n_problems


def _holm_cells(stats: dict[str, Stat], *, points: bool) -> dict[str, str]:
    """Each method's cell, starred where significant at ALPHA after Holm's correction over the column's methods."""
    adjusted = holm([s.p if s is not None else math.nan for s in stats.values()])
    return {m: _cell(s, points, star=adj <= ALPHA) for (m, s), adj in zip(stats.items(), adjusted, strict=True)}


def _cell(s: Stat, points: bool, *, star: bool) -> str:
    if s is None or _n(s) == 0:
        return "—"
    f = "{:+.1f}" if points else "{:+.4f}"
    size = f"(n {s.n})" if isinstance(s, Paired) else f"({s.n_problems} problems)"
    if math.isnan(s.se):
        return f"{f.format(s.mean)} {size}"
    ci = f"[{f.format(s.ci_low)}, {f.format(s.ci_high)}]"
    pv = "<0.001" if s.p < 0.001 else f"{s.p:.3f}"
    return f"{f.format(s.mean)} ± {f.format(s.se).lstrip('+')} {ci} p {pv}{'*' if star else ''} {size}"


def _note(baseline: str, family: int, one_seed: bool) -> str:
    if one_seed:
        what = (
            f"Per cell: mean of the per-problem differences method − `{baseline}` (a problem's accuracy: the "
            f"fraction of its samples correct) ± bootstrap SE, [{100 * CONFIDENCE:.0f}% percentile CI], bootstrap p, "
            f"(matched problems): a paired bootstrap over problems, {RESAMPLES} resamples, RNG seed {SEED}; the Avg "
            "resamples each benchmark's problems on its own. With one seed it measures the noise of the problem "
            "draw only, not of training. Entropy: the seed's difference in the last probe-set measurement."
        )
    else:
        what = (
            f"Per cell: mean of the per-seed differences method − `{baseline}` ± its standard error (s_d/√n), "
            f"[{100 * CONFIDENCE:.0f}% CI], paired t-test p, (n seeds). Accuracy: per benchmark and their Avg; "
            "entropy: the last probe-set measurement (steer_bench.train.probeset)."
        )
    return (
        f"{what} *: significant at α = {ALPHA} after Holm's step-down correction, per column, across the methods "
        f"compared against `{baseline}` that have a p-value there (at most {family})."
    )


def _seeds_line(avg: list[Paired]) -> str:
    """The seeds a gap on the Avg needs, from the pooled paired-difference SD (or the prior, if none measured)."""
    df = sum(p.n - 1 for p in avg)
    if df > 0:
        sd = math.sqrt(sum((p.n - 1) * p.n * p.se**2 for p in avg) / df)  # s_d² = n·SE², pooled over df
        source = f"s_d = {sd:.2f} points, the paired differences' SD over seeds pooled over the methods"
    else:
        sd, source = PRIOR_SD, PRIOR
    n = {g: seeds_needed(g, sd, power=POWER, alpha=ALPHA) for g in GAPS}
    needs = "; ".join(f"{g} point{'s' if g > 1 else ''}: {n[g]}" for g in GAPS)
    return (
        f"Seeds needed to detect a gap on the Avg at {100 * POWER:.0f}% power (paired t-test, two-sided "
        f"α = {ALPHA}): {needs} ({source})."
    )

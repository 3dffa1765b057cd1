"""The main table (rows × benchmarks + Avg, mean ± std over seeds) and the comparison with the paper.

Conventions (also stated under every table):
- Accuracy in percent, one decimal. mean ± std over seeds; std is the sample std (ddof = 1), shown only with
  ≥ 2 seeds. "—": no result. "†": fewer seeds than configured (the Missing section of report.md lists them).
- Avg of one seed = unweighted mean over the benchmarks, only for seeds that have every benchmark; the Avg
  cell is the mean ± std of those per-seed averages.
- Best per column in bold, compared at the displayed precision (ties are all bold).
- Seed spread and evaluation error (a second table and the CSV): min–max over seeds, and the standard error
  over problems of one evaluation (``acc_se`` of its summary.json: s/√P of the per-problem avg@k, see
  ``steer_bench.evaluation.metrics``), root-mean-square over the seeds; for Avg the per-seed SE of the unweighted mean
  over benchmarks, √(Σ se_b²)/B.
- vs paper: Δ = ours − paper, computed from the displayed (rounded) value in Markdown, unrounded in the CSV.
  The paper's Avg is over its six benchmarks, so it is compared only when the experiment has exactly those.
"""

from __future__ import annotations

import csv
import io
import math
import statistics
from dataclasses import dataclass

from steer_bench.evaluation.metrics import combined_se
from steer_bench.experiment import ExperimentConfig
from steer_bench.report import labels, reference
from steer_bench.report.collect import Results, expected_rows

DASH = "—"
CONVENTIONS = (
    "Accuracy (%): mean ± std over seeds (sample std, shown with ≥ 2 seeds); Avg: unweighted mean over the "
    "benchmarks per seed; best per column in **bold**; —: no result; †: fewer seeds than configured (see Missing)."
)
SPREAD_CONVENTIONS = (
    "Per cell: min–max of the seeds' accuracies (%) and, in brackets, the standard error of one evaluation: "
    "s/√P over the P problems of the per-problem avg@k (s the sample std; `acc_se` in each summary.json), "
    "root-mean-square over the seeds; Avg: √(Σ SE_b²)/B per seed (benchmarks have disjoint problems). The SE "
    "measures how much the number would move on another draw of problems; the seed spread, how much it moves "
    "with the training seed."
)
VS_PAPER_CONVENTIONS = (
    "Δ = ours − paper in percentage points, from the rounded values shown; —: unknown (the paper's value is not "
    "known to us, or we have no result). The paper's Avg is compared only when the benchmarks are its six."
)


@dataclass(frozen=True)
class Cell:
    """mean/std/min/max over seeds in percent; n seeds found of ``expected``; ``se``: one evaluation's standard
    error over problems in percent (root-mean-square over the seeds; None when a seed has none)."""

    mean: float | None
    std: float | None
    n: int
    expected: int
    low: float | None = None
    high: float | None = None
    se: float | None = None

    @classmethod
    def of(cls, values: list[float], expected: int, ses: list[float | None] | None = None) -> Cell:
        mean = statistics.fmean(values) if values else None
        std = statistics.stdev(values) if len(values) >= 2 else None
        low, high = (min(values), max(values)) if values else (None, None)
        se = None
        if ses and all(x is not None and math.isfinite(x) for x in ses):
            se = math.sqrt(statistics.fmean(x * x for x in ses))
        return cls(mean, std, len(values), expected, low, high, se)

    @property
    def partial(self) -> bool:
        return 0 < self.n < self.expected


@dataclass
class Table:
    rows: list[str]
    labels: dict[str, str]
    trained: dict[str, bool]
    columns: list[str]  # benchmarks in display order, then labels.AVG
    cells: dict[tuple[str, str], Cell]

    def best(self, column: str) -> set[str]:
        """Rows with the column's highest mean at display precision."""
        shown = {r: round(c.mean, 1) for r in self.rows if (c := self.cells[(r, column)]).mean is not None}
        top = max(shown.values(), default=None)
        return {r for r, v in shown.items() if v == top}


def main_table(exp: ExperimentConfig, results: Results) -> Table:
    benches = labels.order_benchmarks(list(exp.data.benchmarks))
    rows = expected_rows(exp)
    cells: dict[tuple[str, str], Cell] = {}
    for row, seeds in rows.items():
        per_seed_avg, per_seed_se = [], []
        for bench in benches:
            found = [s for s in seeds if (row, s, bench) in results.acc]
            values = [100 * results.acc[(row, s, bench)] for s in found]
            cells[(row, bench)] = Cell.of(
                values, len(seeds), [_pct(results.acc_se.get((row, s, bench))) for s in found]
            )
        for s in seeds:
            found = [results.acc.get((row, s, b)) for b in benches]
            if all(v is not None for v in found):
                per_seed_avg.append(100 * statistics.fmean(found))
                per_seed_se.append(_pct(combined_se([results.acc_se.get((row, s, b)) for b in benches])))
        cells[(row, labels.AVG)] = Cell.of(per_seed_avg, len(seeds), per_seed_se)
    trained = {r: r in exp.methods for r in rows}
    names = {r: labels.row_label(r, trained=trained[r]) + (" (control)" if r in exp.controls else "") for r in rows}
    return Table(list(rows), names, trained, [*benches, labels.AVG], cells)


def _pct(se: float | None) -> float | None:
    return None if se is None or not math.isfinite(se) else 100 * se


# ---------------------------------------------------------------------------------------------- rendering
def cell_text(cell: Cell, *, bold: bool = False, latex: bool = False) -> str:
    if cell.mean is None:
        return "--" if latex else DASH
    pm = r" $\pm$ " if latex else " ± "
    text = f"{cell.mean:.1f}" + (f"{pm}{cell.std:.1f}" if cell.std is not None else "")
    if bold:
        text = rf"\textbf{{{text}}}" if latex else f"**{text}**"
    if cell.partial:
        text += r"$^\dagger$" if latex else "†"
    return text


def to_markdown(table: Table) -> str:
    head = ["Method", *(labels.benchmark_label(c) for c in table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * len(table.columns)]
    best = {c: table.best(c) for c in table.columns}
    for r in table.rows:
        cells = [cell_text(table.cells[(r, c)], bold=r in best[c]) for c in table.columns]
        lines.append("| " + " | ".join([table.labels[r], *cells]) + " |")
    return "\n".join(lines) + "\n"


def spread_text(cell: Cell) -> str:
    """``low–high (SE x)``; a single seed shows its value; ``—`` parts are unknown."""
    if cell.mean is None:
        return DASH
    rng = f"{cell.low:.1f}" if cell.n == 1 else f"{cell.low:.1f}–{cell.high:.1f}"
    return rng + (f" (SE {cell.se:.1f})" if cell.se is not None else " (SE —)")


def spread_markdown(table: Table) -> str:
    """The seed spread and the evaluation's standard error per cell (:data:`SPREAD_CONVENTIONS`)."""
    head = ["Method", "seeds", *(labels.benchmark_label(c) for c in table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|---:|" + "---:|" * len(table.columns)]
    for r in table.rows:
        first = table.cells[(r, table.columns[0])]
        cells = [spread_text(table.cells[(r, c)]) for c in table.columns]
        lines.append("| " + " | ".join([table.labels[r], f"{first.n}/{first.expected}", *cells]) + " |")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def _latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in text)


def to_latex(table: Table, title: str) -> str:
    """A booktabs ``table`` environment captioned with ``title`` (plain text, escaped here)."""
    caption = _latex_escape(title) + r": accuracy (\%), mean $\pm$ std over seeds; best in bold."
    best = {c: table.best(c) for c in table.columns}
    head = " & ".join(["Method", *(labels.benchmark_label(c) for c in table.columns)]) + r" \\"
    cells = {
        r: [cell_text(table.cells[(r, c)], bold=r in best[c], latex=True) for c in table.columns] for r in table.rows
    }
    body = [" & ".join([_latex_escape(table.labels[r]), *cells[r]]) + r" \\" for r in table.rows]
    align = "l" + "r" * len(table.columns)
    top = [r"\begin{table}[t]", r"\centering", rf"\caption{{{caption}}}", r"\begin{tabular}{" + align + "}"]
    lines = [*top, r"\toprule", head, r"\midrule", *body, r"\bottomrule", r"\end{tabular}", r"\end{table}"]
    return "\n".join(lines) + "\n"


def _fmt(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def to_csv(table: Table) -> str:
    """One line per row; per column ``<col>_mean_pct``, ``_std_pct``, ``_n_seeds``, ``_min_pct``, ``_max_pct``
    and ``_se_pct`` (one evaluation's standard error, see :data:`SPREAD_CONVENTIONS`); empty = none."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    stats_ = ("mean_pct", "std_pct", "n_seeds", "min_pct", "max_pct", "se_pct")
    w.writerow(["row", "label", "kind", "seeds_expected"] + [f"{c}_{s}" for c in table.columns for s in stats_])
    for r in table.rows:
        cells = [table.cells[(r, c)] for c in table.columns]
        kind = "method" if table.trained[r] else "eval_only"
        w.writerow(
            [r, table.labels[r], kind, cells[0].expected]
            + [v for c in cells for v in (_fmt(c.mean), _fmt(c.std), c.n, _fmt(c.low), _fmt(c.high), _fmt(c.se))]
        )
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------- vs paper
@dataclass(frozen=True)
class Comparison:
    ours: Cell
    paper: float | None

    @property
    def delta(self) -> float | None:
        return None if self.ours.mean is None or self.paper is None else self.ours.mean - self.paper

    @property
    def shown_delta(self) -> float | None:
        """Δ of the displayed numbers (ours rounded to one decimal, as printed)."""
        return None if self.delta is None else round(self.ours.mean, 1) - self.paper


def compare(table: Table, ref: str) -> dict[tuple[str, str], Comparison]:
    reference.check_table(ref)
    paper_avg_ok = set(table.columns[:-1]) == set(reference.COLUMNS[:-1])
    out = {}
    for (r, c), cell in table.cells.items():
        paper = reference.paper_value(ref, table.labels[r], c) if c != labels.AVG or paper_avg_ok else None
        out[(r, c)] = Comparison(cell, paper)
    return out


def _signed(x: float | None) -> str:
    return DASH if x is None else f"{x:+.1f}"


def vs_paper_markdown(table: Table, ref: str) -> str:
    comp = compare(table, ref)
    head = ["Method", "", *(labels.benchmark_label(c) for c in table.columns)]
    lines = ["| " + " | ".join(head) + " |", "|---|---|" + "---:|" * len(table.columns)]
    for r in table.rows:
        row = [comp[(r, c)] for c in table.columns]
        paper = [DASH if x.paper is None else f"{x.paper:.1f}" for x in row]
        lines.append("| " + " | ".join([table.labels[r], "ours", *(cell_text(x.ours) for x in row)]) + " |")
        lines.append("| " + " | ".join(["", f"paper ({ref})", *paper]) + " |")
        lines.append("| " + " | ".join(["", "Δ", *(_signed(x.shown_delta) for x in row)]) + " |")
    return "\n".join(lines) + "\n"


def vs_paper_csv(table: Table, ref: str) -> str:
    comp = compare(table, ref)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["row", "label", "benchmark", "ours_mean_pct", "ours_std_pct", "n_seeds", "paper_pct", "delta_pct"])
    for r in table.rows:
        for c in table.columns:
            x = comp[(r, c)]
            w.writerow(
                [r, table.labels[r], c, _fmt(x.ours.mean), _fmt(x.ours.std), x.ours.n, _fmt(x.paper), _fmt(x.delta)]
            )
    return buf.getvalue()

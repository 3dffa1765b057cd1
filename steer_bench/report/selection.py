"""The "Checkpoint selection" section: each trained row under three checkpoint-selection views.

- (a) ``best``: the checkpoint selected on ``data.validation`` by ``validation.metric`` (the paper's way), marked
  ‡ when the validation set is also a reported benchmark (the checkpoint is graded on its own selection set);
- (b) ``last``: the last checkpoint (no selection);
- (c) ``best_disjoint``: the checkpoint selected on ``data.selection`` or ``data.selection_holdout`` (a held-out
  slice of the training set), disjoint from every reported benchmark.

Per method and view: Avg (the unweighted mean over the benchmarks per seed, seeds with every benchmark), mean ± std
over seeds, as in the main table; and how much the selection moves the row, view − last, the per-seed difference of
the Avg's, mean ± std over the seeds that have both. The main view (``eval.checkpoint``) is read from the main
evaluations, the others from ``eval.selection_views``'s (:attr:`~steer_bench.report.collect.Results.view_acc`).
"""

from __future__ import annotations

import statistics

from steer_bench.experiment import ExperimentConfig
from steer_bench.report.collect import Results
from steer_bench.report.tables import DASH, Cell

VIEWS = ("best", "last", "best_disjoint")


def seed_avgs(exp: ExperimentConfig, results: Results, view: str, method: str) -> dict[int, float]:
    """{seed: Avg in percent} of ``method`` under ``view``, for seeds that have every benchmark."""
    out = {}
    for s in exp.seeds:
        if view == exp.eval.checkpoint:
            found = [results.acc.get((method, s, b)) for b in exp.data.benchmarks]
        else:
            found = [results.view_acc.get((view, method, s, b)) for b in exp.data.benchmarks]
        if all(v is not None for v in found):
            out[s] = 100 * statistics.fmean(found)
    return out


def _text(cell: Cell, *, signed: bool = False) -> str:
    if cell.mean is None:
        return DASH
    text = f"{cell.mean:+.1f}" if signed else f"{cell.mean:.1f}"
    text += f" ± {cell.std:.1f}" if cell.std is not None else ""
    return text + ("†" if cell.partial else "")


def section(exp: ExperimentConfig, results: Results, labels: dict[str, str]) -> list[str]:
    """The Markdown of the section (its heading included)."""
    d = exp.data
    self_graded = d.validation is not None and d.validation in d.benchmarks
    heads = {
        "best": f"(a) best on `{d.validation or 'none'}`" + (" ‡" if self_graded else ""),
        "last": "(b) last",
        "best_disjoint": f"(c) best on {sel} (disjoint)"
        if (sel := d.disjoint_selection())
        else "(c) disjoint: not configured",
    }
    main = {"best": "(a)", "last": "(b)"}[exp.eval.checkpoint]
    n = len(exp.seeds)
    head = ["Method", *(heads[v] for v in VIEWS), "(a) − (b)", "(c) − (b)"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for m in exp.methods:
        avgs = {v: seed_avgs(exp, results, v, m) for v in VIEWS}
        cells = [_text(Cell.of(list(avgs[v].values()), n)) for v in VIEWS]
        for v in ("best", "best_disjoint"):
            both = [s for s in exp.seeds if s in avgs[v] and s in avgs["last"]]
            cells.append(_text(Cell.of([avgs[v][s] - avgs["last"][s] for s in both], n), signed=True))
        lines.append("| " + " | ".join([labels.get(m, m), *cells]) + " |")
    notes = [
        "",
        f"Avg accuracy (%) over the benchmarks, mean ± std over seeds (as in the main table); (view) − (b): the "
        f"per-seed difference from the last checkpoint, mean ± std over seeds, i.e. how much the selection moves "
        f"the row; —: not evaluated; †: fewer seeds than configured. **The main table uses view {main}** "
        f"(`eval.checkpoint: {exp.eval.checkpoint}`).",
    ]
    if self_graded:
        notes.append(
            f"‡ The validation set `{d.validation}` is also a reported benchmark: view (a) grades each checkpoint on "
            "the set it was selected on, which favours it; view (c) is selected on a set disjoint from every "
            "reported benchmark."
        )
    if not exp.eval.selection_views:
        notes.append(
            "Only the main view was evaluated: set `eval.selection_views: true` (and `data.selection` or "
            "`data.selection_holdout` for view (c)) to evaluate the others."
        )
    elif not d.disjoint_selection():
        notes.append(
            "View (c) needs `data.selection` or `data.selection_holdout`, a set disjoint from every reported "
            "benchmark."
        )
    return ["## Checkpoint selection", "", *lines, *notes, ""]

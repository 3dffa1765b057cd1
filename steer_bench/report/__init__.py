"""`steer-bench report`: the paper-style tables and figures of one experiment, aggregated from MLflow.

Writes ``results/<exp>/report/``: ``main_table.md|.tex|.csv``, ``vs_paper.md|.csv`` (when the config names a
``reference`` table), ``figures/*.png`` and ``report.md`` tying them together. ``--source files`` builds the
same report from the run files instead (runs made with tracking off); a test checks that both agree.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from steer_bench import files, tracking
from steer_bench.errors import SteerBenchError
from steer_bench.experiment import ExperimentConfig
from steer_bench.report import collect, document, figures, reference, tables


@dataclass(frozen=True)
class Report:
    out_dir: Path
    results: collect.Results
    table: tables.Table
    figures: dict[str, str | None]
    """Figure name -> PNG path relative to ``out_dir``, or None when no run logged its metrics."""


def build_report(exp: ExperimentConfig, out_dir: str | Path | None = None, *, uri: str | None = None) -> Report:
    """Collect (from MLflow at ``uri``, or from the files when ``uri`` is None) and write every report file."""
    if exp.reference:
        reference.check_table(exp.reference)
    out = Path(out_dir) if out_dir else exp.root / "report"
    files.remove_temporaries(out)  # from a report killed mid-write
    if uri:
        collect.remirror_failed_runs(exp, uri)  # runs whose store failed mid-run: their files are complete
    results = collect.from_mlflow(exp, uri) if uri else collect.from_files(exp)
    if not results.acc and not results.curves:
        raise SteerBenchError(
            f"no evaluation or training results of experiment {exp.name!r} in {results.source}; "
            "run the pipeline first (or point MLFLOW_TRACKING_URI / --tracking-uri at the right store)"
        )
    table = tables.main_table(exp, results)
    files.write_text(out / "main_table.md", tables.to_markdown(table) + "\n" + tables.CONVENTIONS + "\n")
    files.write_text(out / "main_table.tex", tables.to_latex(table, exp.name))
    files.write_text(out / "main_table.csv", tables.to_csv(table))
    if exp.reference:
        md = tables.vs_paper_markdown(table, exp.reference) + "\n" + tables.VS_PAPER_CONVENTIONS + "\n"
        files.write_text(out / "vs_paper.md", md)
        files.write_text(out / "vs_paper.csv", tables.vs_paper_csv(table, exp.reference))
    else:
        for name in ("vs_paper.md", "vs_paper.csv"):
            (out / name).unlink(missing_ok=True)  # from an earlier report with a reference
    drawn = figures.draw_all(results.curves, list(exp.methods), table.labels, out)
    rows = [r.name for r in exp.eval_only] + list(exp.methods)
    pass_path = out / "figures" / "pass_at_k.png"
    if not figures.draw_pass_at_k(results.pass_at, rows, table.labels, pass_path):
        pass_path.unlink(missing_ok=True)
    drawn["pass_at_k"] = "figures/pass_at_k.png" if pass_path.is_file() else None
    files.write_text(out / "report.md", document.render(exp, results, table, drawn, out))
    if uri:  # the tables and figures in the MLflow UI too (a kind=report run)
        tracking.log_report(exp.name, out, uri=uri)
    return Report(out, results, table, drawn)

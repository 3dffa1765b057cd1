"""``steer-bench report``: the paper-style tables and figures of one experiment, aggregated from MLflow."""

from __future__ import annotations

import argparse

from steer_bench.commands import add_experiment


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=True)
    parser.add_argument("--out", help="output folder (default: results/<experiment>/report)")
    parser.add_argument(
        "--source",
        choices=["mlflow", "files"],
        default="mlflow",
        help="read the numbers from MLflow (default) or from the run files (summary.json, metrics.jsonl)",
    )
    parser.add_argument(
        "--tracking-uri",
        help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite results/<experiment>/mlflow.db)",
    )


def run(args: argparse.Namespace) -> int:
    from steer_bench.experiment import load_experiment, split_overrides
    from steer_bench.report import build_report
    from steer_bench.tracking import resolve_uri

    exp = load_experiment(args.config, split_overrides(args.overrides)[0])
    uri = (args.tracking_uri or resolve_uri(exp.tracking_db())) if args.source == "mlflow" else None
    report = build_report(exp, args.out, uri=uri)
    print(f"wrote {report.out_dir / 'report.md'}")
    return 0

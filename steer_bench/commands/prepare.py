"""``steer-bench prepare``: normalise one dataset into the experiment's ``data/<dataset>.parquet`` (or ``--out``)."""

from __future__ import annotations

import argparse
from pathlib import Path

from steer_bench.commands import add_experiment
from steer_bench.errors import SteerBenchError


def configure(parser: argparse.ArgumentParser) -> None:
    from steer_bench.data.prepare import BAD_ROW_POLICIES, DEFAULT_SYNTH_LEVELS
    from steer_bench.data.registry import REGISTRY, SHARED_DATA_ENV
    from steer_bench.data.templates import TEMPLATES

    add_experiment(parser, required=False)
    parser.add_argument("--dataset", required=True, help=f"registry name: {', '.join(REGISTRY)}")
    alone = parser.add_argument_group("without --config")
    alone.add_argument("--out", type=Path, help="output parquet path")
    alone.add_argument("--data-dir", type=Path, help=f"local release parquet folder (default: ${SHARED_DATA_ENV})")
    alone.add_argument("--template", choices=TEMPLATES, help="prompt template (default: the registry's)")
    alone.add_argument("--limit", type=int, help="keep a seeded random subset of N problems (synthetic: generate N)")
    alone.add_argument("--levels", default=",".join(map(str, DEFAULT_SYNTH_LEVELS)), help="synthetic levels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--on-bad-row", choices=BAD_ROW_POLICIES, default="error", help="error (default) or skip")
    parser.add_argument("--no-gold-check", action="store_true", help="skip grading every gold against itself")
    parser.add_argument("--workers", type=int, default=2, help="grading processes for the gold check")


def run(args: argparse.Namespace) -> int:
    from steer_bench.data.prepare import prepare_dataset

    if args.config:
        from steer_bench.experiment import load_experiment, split_overrides

        exp = load_experiment(args.config, split_overrides(args.overrides)[0])
        d = exp.data
        out, data_dir, levels = exp.data_path(args.dataset), d.dir, d.synthetic_levels
        template, limit = d.templates.get(args.dataset, d.template), d.limits.get(args.dataset)
    elif args.out:
        out, data_dir, template, limit = args.out, args.data_dir, args.template, args.limit
        try:
            levels = [int(x) for x in args.levels.split(",") if x.strip()]
        except ValueError:
            raise SteerBenchError(f"--levels must be comma-separated integers, got {args.levels!r}") from None
    else:
        raise SteerBenchError("prepare needs --config (the experiment's layout) or --out")
    stats = prepare_dataset(
        args.dataset,
        out,
        data_dir=data_dir,
        template=template,
        limit=limit,
        seed=args.seed,
        on_bad_row=args.on_bad_row,
        check_golds=not args.no_gold_check,
        workers=args.workers,
        levels=levels,
    )
    print(f"{args.dataset}: wrote {stats['written']} problems to {out}; skipped {stats['skipped'] or 'none'}")
    return 0

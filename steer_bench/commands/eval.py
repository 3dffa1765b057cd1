"""``steer-bench eval``: evaluate a trained run, an eval-only row, or any HF model on benchmarks.

Four ways to call it::

    steer-bench eval --config EXP.yaml --method steer --seed 0      # a trained run (eval.checkpoint: best | last;
                                                                    # eval.selection_views: its other checkpoints too)
    steer-bench eval --config EXP.yaml --row base                   # an eval-only row of the experiment
    steer-bench eval --config EXP.yaml --all                        # every row and run, one engine (eval.jobs: one)
    steer-bench eval --model Qwen/Qwen2.5-Math-7B --benchmarks aime24 math500 --protocol paper --out DIR

With ``--config`` everything comes from the experiment (``eval:`` section; ``--set eval.engine=hf`` etc.
override it) and results go to ``results/<exp>/eval/<row>[/seed<k>]/``; summaries made under another config
there are re-evaluated (standalone, that is an error unless ``--force``). Standalone, the benchmarks are
prepared from the registry into ``DIR/data/`` (``--data-dir``: the release's parquet files; ``--limit N``: a
seeded subset) unless given as ``name=prepared.parquet``. The protocol (``--protocol`` name or YAML,
``--set protocol.<key>=value``) is described in :mod:`steer_bench.evaluation.protocol`; the files written and
the MLflow run in :mod:`steer_bench.evaluation.runner`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from steer_bench.commands import add_experiment
from steer_bench.errors import SteerBenchError

# Standalone options (flag, default, help): defaulted in _standalone, so that --config can reject them.
STANDALONE: list[tuple[str, object, str]] = [
    ("--protocol", "paper", "protocol name (configs/protocols) or YAML path"),
    ("--engine", "vllm", "vllm or hf"),
    ("--dtype", "auto", "auto, float32, bfloat16 or float16"),
    ("--tensor-parallel-size", 1, "vLLM tensor parallelism"),
    ("--batch-size", 64, "hf engine: prompts per generate call"),
    ("--workers", 2, "grading processes"),
    ("--timeout-s", 10.0, "grading timeout per sample, seconds"),
    ("--experiment", "steer-bench-eval", "MLflow experiment"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    from steer_bench.data.registry import PAPER_BENCHMARKS

    exp = parser.add_argument_group("from an experiment config")
    add_experiment(exp, required=False)
    exp.add_argument("--method", help="method of the trained run to evaluate (with --seed)")
    exp.add_argument("--seed", type=int, help="seed of the trained run to evaluate")
    exp.add_argument("--row", help="eval-only row of the experiment (standalone: the row label, default from --model)")
    exp.add_argument("--all", action="store_true", help="every eval-only row and trained run, one engine for all")
    alone = parser.add_argument_group("standalone")
    alone.add_argument("--model", help="HF model folder or Hub id")
    paper = " ".join(PAPER_BENCHMARKS)
    alone.add_argument("--benchmarks", nargs="+", help=f"names or name=prepared.parquet (default: {paper})")
    alone.add_argument("--out", type=Path, help="output folder")
    alone.add_argument("--data-dir", help="folder of the release's parquet files (default: $STEER_BENCH_SHARED_DATA)")
    alone.add_argument("--limit", type=int, help="evaluate a seeded subset of N problems per benchmark")
    for flag, default, text in STANDALONE:
        alone.add_argument(flag, type=type(default), help=f"{text} (default: {default})")
    both = parser.add_argument_group("either way")
    both.add_argument("--force", action="store_true", help="re-evaluate benchmarks that are already done")
    both.add_argument("--no-track", action="store_true", help="do not log to MLflow")
    both.add_argument("--tracking-uri", help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite in results)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.evaluation.engines import SharedEngine
    from steer_bench.evaluation.runner import Redo, evaluate
    from steer_bench.tracking import resolve_uri

    jobs, settings, protocol, db = _from_config(args) if args.config else _standalone(args)
    uri = None if args.no_track else (args.tracking_uri or resolve_uri(db))
    redo: Redo = (
        "all" if args.force else "stale" if args.config else "none"
    )  # the pipeline's folders follow the config
    shared = SharedEngine()  # one engine for every job of this call (one job unless --all)
    try:
        for job in jobs:
            done = evaluate(
                job, settings, protocol, redo=redo, track=not args.no_track, tracking_uri=uri, open_engine=shared
            )
            print(f"{job.row}: {job.model} ({protocol.name}); evaluated {done['evaluated'] or 'nothing'}")
            for b, acc in done["acc"].items():
                print(f"  {b:<16} acc {acc:.4f}")
            print(f"  {'avg':<16} acc {done['avg_acc']:.4f}   -> {job.out_dir}")
    finally:
        shared.close()
    if len(jobs) > 1:
        print(f"{len(jobs)} evaluations: {shared.opened} engine start(s), {shared.reloaded} weight reload(s)")
    return 0


def _from_config(args: argparse.Namespace):
    from steer_bench.evaluation.protocol import load_protocol
    from steer_bench.experiment import load_experiment, split_overrides
    from steer_bench.experiment.jobs import eval_only_job, trained_run_job, view_jobs

    flags = [f for f, _, _ in STANDALONE] + ["--model", "--out", "--benchmarks", "--data-dir", "--limit"]
    given = [f for f in flags if getattr(args, _dest(f)) is not None]
    if given:
        raise SteerBenchError(f"eval: {given} are standalone options; with --config use --set eval.<key>=value")
    own, nested = split_overrides(args.overrides)
    exp = load_experiment(args.config, own)
    protocol = load_protocol(exp.eval.protocol, nested["protocol"])
    if args.all and not (args.row or args.method or args.seed is not None):
        jobs = [eval_only_job(exp, r.name) for r in exp.eval_only]
        jobs += [
            j for m in exp.methods for s in exp.seeds for j in [trained_run_job(exp, m, s), *view_jobs(exp, m, s)]
        ]
    elif args.row and args.method is None and args.seed is None and not args.all:
        jobs = [eval_only_job(exp, args.row)]
    elif args.method and args.seed is not None and not args.row and not args.all:
        jobs = [trained_run_job(exp, args.method, args.seed), *view_jobs(exp, args.method, args.seed)]
    else:
        raise SteerBenchError(
            "eval --config needs one of: --method and --seed (a trained run), --row (eval-only), --all"
        )
    return jobs, exp.eval, protocol, exp.tracking_db()


def _standalone(args: argparse.Namespace):
    from steer_bench.config import validate
    from steer_bench.data.registry import PAPER_BENCHMARKS
    from steer_bench.evaluation.protocol import load_protocol
    from steer_bench.evaluation.schema import EvalSection
    from steer_bench.experiment.jobs import standalone_job

    if not args.model or not args.out:
        raise SteerBenchError("eval needs --config (with --method/--seed or --row), or --model and --out")
    if args.method or args.seed is not None or args.all:
        raise SteerBenchError("eval: --method/--seed/--all need --config")
    from steer_bench.experiment import split_overrides

    own, nested = split_overrides(args.overrides)
    if own:
        raise SteerBenchError(f"eval without --config: --set takes only protocol.<key>=value, got {own}")
    for flag, default, _ in STANDALONE:
        if getattr(args, _dest(flag)) is None:
            setattr(args, _dest(flag), default)
    given = {k: getattr(args, k) for k in ("protocol", "engine", "workers", "timeout_s", "dtype", "batch_size")}
    vllm = {"tensor_parallel_size": args.tensor_parallel_size, "gpu_memory_utilization": 0.9}
    settings = validate(EvalSection, given | {"vllm": vllm}, source="eval arguments")
    protocol = load_protocol(args.protocol, nested["protocol"])  # before any data is prepared
    job = standalone_job(
        args.model,
        args.benchmarks or list(PAPER_BENCHMARKS),
        args.out,
        experiment=args.experiment,
        row=args.row,
        data_dir=args.data_dir,
        limit=args.limit,
        workers=args.workers,
    )
    return [job], settings, protocol, args.out / "mlflow.db"


def _dest(flag: str) -> str:
    return flag.removeprefix("--").replace("-", "_")

"""Where an evaluation's time goes, per engine: engine start, generation, grading, and the rest (loading the
data, rendering and checking prompts, writing files, MLflow), from one real `evaluate` call each.

    .venv/bin/python benchmarks/evaluate.py [--model DIR] [--engines hf vllm] [--problems 64] [--k 8]

Without ``--model`` it builds the smoke model (configs/warmstart/smoke.yaml) in a temporary folder. The
benchmark is the synthetic test set (``--problems`` problems, ``--k`` samples each, T = 1, 24 new tokens).
Run it by hand on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from steer_bench.config import load_model
from steer_bench.data.prepare import prepare_dataset
from steer_bench.evaluation.engines import open_engine
from steer_bench.evaluation.protocol import Protocol
from steer_bench.evaluation.runner import EvalJob, evaluate
from steer_bench.evaluation.schema import EvalSection
from steer_bench.files import read_json
from steer_bench.warmstart import WarmstartConfig, warmstart

REPO = Path(__file__).resolve().parents[1]


class TimedOpen:
    """``open_engine`` that remembers how long the engine took to start."""

    seconds = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = open_engine(*args, **kwargs)
        self.seconds = time.perf_counter() - t0
        return out


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--engines", nargs="+", default=["hf", "vllm"])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-eval-"))
    model = args.model
    if model is None:
        model = tmp / "model"
        warmstart(load_model(WarmstartConfig, REPO / "configs" / "warmstart" / "smoke.yaml"), model)
    data = tmp / "synth_test.parquet"
    prepare_dataset("synth_test", data, limit=args.problems, levels=[1], check_golds=False)
    protocol = Protocol(name="bench", temperature=1.0, max_new_tokens=24, k={"synth_test": args.k})
    rows = {}
    for kind in args.engines:
        timed_open = TimedOpen()
        job = EvalJob(model=str(model), row=kind, out_dir=tmp / kind, benchmarks={"synth_test": data}, experiment="b")
        settings = EvalSection(engine=kind, workers=args.workers)
        t0 = time.perf_counter()
        evaluate(job, settings, protocol, track=False, open_engine=timed_open)
        wall = time.perf_counter() - t0
        phases = read_json(tmp / kind / "synth_test" / "summary.json")["time_s"]
        samples = args.problems * args.k
        rows[kind] = {
            "wall_s": round(wall, 2),
            "engine_start_s": round(timed_open.seconds, 2),
            "generate_s": phases["generate"],
            "grade_s": phases["grade"],
            "rest_s": round(wall - timed_open.seconds - phases["generate"] - phases["grade"], 2),
            "samples": samples,
            "grade_samples_per_s": round(samples / phases["grade"], 1),
        }
    print(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])

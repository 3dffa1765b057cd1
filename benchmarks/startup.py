"""Start-up of a miniature training job: process start to its first rollout (run by hand; docs/benchmarks.md).

    .venv/bin/python benchmarks/startup.py [--repeats 5] [--threads 1] [--out startup.json]

Needs the miniature's warm start and data in ``results/miniature`` (``snakemake --cores 2
results/miniature/warmstart/warmstart.json results/miniature/data/synth_train.parquet
results/miniature/data/synth_test.parquet``). Each repeat is a fresh ``python -m steer_bench train`` process of the
default config (GRPO, one step, into a temporary folder), as a Snakemake job runs it, with MLflow tracking on and
off interleaved (on, off, on, off, …) so that machine noise hits both. Reported per process:

- ``to_first_rollout_s``: from just before the process is spawned to the moment the trainer starts its first
  rollout (``startup.first_rollout_unix`` in ``train.done``): interpreter, imports, config, model, data,
  optimizer, MLflow run, engine;
- ``model_load_s``: of that, loading the model and tokenizer (``load_policy``, with the modeling code's import);
- ``without_model_load_s``: the difference (the issue's target excludes the model load);
- ``wall_s``: the whole process (one step, checkpoint and summary included).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from subproc import timed_run

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/default.yaml"


def one(work: Path, track: bool, repeat: int, threads: int) -> dict[str, float]:
    out = work / f"run-{'track' if track else 'notrack'}-{repeat}"
    cmd = [sys.executable, "-m", "steer_bench", "train", "--config", CONFIG, "--method", "grpo", "--seed", "0",
           "--out", str(out), "--set", "train.steps=1", "--set", "train.validation.every_n_steps=0",
           "--set", "train.analysis.every_n_steps=0", "--set", f"train.track={str(track).lower()}",
           "--set", f"train.tracking_db={work / 'mlflow.db'}"]  # fmt: skip
    spawned = time.time()
    result = timed_run(cmd, cwd=REPO, env=os.environ | {"OMP_NUM_THREADS": str(threads)}, log=out.with_suffix(".log"))
    startup = json.loads((out / "train.done").read_text())["startup"]
    first = startup["first_rollout_unix"] - spawned
    return {
        "to_first_rollout_s": first,
        "model_load_s": startup["model_load_s"],
        "without_model_load_s": first - startup["model_load_s"],
        "wall_s": result["wall_s"],
        "max_rss_mb": result["max_rss_mb"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of each process (Snakemake: 1)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {"tracking on": [], "tracking off": []}
    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        for repeat in range(args.repeats):
            for track in (True, False):
                row = one(Path(tmp), track, repeat, args.threads)
                rows[f"tracking {'on' if track else 'off'}"].append(row)
                print(f"repeat {repeat} tracking {'on ' if track else 'off'}: " + ", ".join(
                    f"{k} {v:.2f}" for k, v in row.items()), flush=True)  # fmt: skip
    summary = {
        name: {k: {"median": statistics.median(r[k] for r in runs), "runs": [round(r[k], 2) for r in runs]}
               for k in runs[0]}
        for name, runs in rows.items()
    }  # fmt: skip
    for name, stats in summary.items():
        print(name + ": " + ", ".join(f"{k} {v['median']:.2f}" for k, v in stats.items()))
    if args.out:
        args.out.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()

"""vLLM against HF generation in the CPU miniature, end to end (run by hand; numbers in docs/benchmarks.md).

    .venv/bin/python benchmarks/miniature_engines.py [--what eval train] [--repeats 2] [--steps N] [--out F.json]

Needs the miniature's warm start, data and one trained run in ``results/miniature`` (``snakemake --cores 2
results/miniature/runs/grpo/seed0/train.done``). Each measurement is a fresh ``python -m steer_bench``
process, exactly as a Snakemake job runs it, timed from process start to exit (the run's ``train.done`` /
``eval.done`` is its last write), engines interleaved (hf, vllm, hf, vllm, …) so that machine noise hits both:

- ``eval``: ``steer-bench eval`` of the trained run ``grpo/seed0`` on the default benchmarks (200 synthetic test
  problems × 4 samples) with ``eval.engine`` hf and vllm (``--force``: re-evaluated every time);
- ``train``: ``steer-bench train --method grpo --seed 0`` with ``rollout.engine`` hf and vllm, the default
  config's recipe (``--steps`` overrides its 40 steps), into a temporary folder.

Tracking is off for both engines (``--no-track`` / ``track=false``): it costs both the same. Every process gets
``OMP_NUM_THREADS=--threads`` (default 1: what Snakemake gives the miniature's train and eval jobs, ``threads: 1``,
two of them side by side on the 2 cores; vLLM's CPU backend serves on 1 thread unless OMP_NUM_THREADS says more).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from subproc import timed_run

REPO = Path(__file__).resolve().parents[1]
CONFIG = "configs/default.yaml"
ENGINES = ("hf", "vllm")


def command(what: str, engine: str, work: Path, repeat: int, steps: int | None) -> list[str]:
    base = [sys.executable, "-m", "steer_bench"]
    if what == "eval":
        return [*base, "eval", "--config", CONFIG, "--method", "grpo", "--seed", "0",
                "--set", f"eval.engine={engine}", "--force", "--no-track"]  # fmt: skip
    out = work / f"train-{engine}-{repeat}"
    extra = ["--set", f"train.steps={steps}"] if steps else []
    return [*base, "train", "--config", CONFIG, "--method", "grpo", "--seed", "0", "--out", str(out),
            "--set", f"train.rollout.engine={engine}", "--set", "train.track=false", *extra]  # fmt: skip


def outcome(what: str, work: Path, engine: str, repeat: int) -> dict[str, float]:
    """What the run computed (a sanity check that both engines did the same job)."""
    if what == "eval":
        s = json.loads((REPO / "results/miniature/eval/grpo/seed0/synth_test/summary.json").read_text())
        return {k: v for k, v in s.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    run = work / f"train-{engine}-{repeat}"
    done = json.loads((run / "train.done").read_text())
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    means = {f"mean {k}": statistics.mean(r[k] for r in rows) for k in ("time/step", "time/rollout")}
    final = done["final"]
    keys = ("rollout/accuracy", "rollout/response_len_mean", "val/avg_at_k")
    return {k: final[k] for k in keys if k in final} | means | {"best_step": done["best_step"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--what", nargs="+", choices=("eval", "train"), default=["eval", "train"])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--steps", type=int, help="training steps (default: the config's)")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run (default: 1)")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    args = parser.parse_args()
    env = os.environ | {"PYTHONPATH": str(REPO), "OMP_NUM_THREADS": str(args.threads)}
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    with tempfile.TemporaryDirectory(prefix="engines-") as tmp:
        work = Path(tmp)
        for what in args.what:
            results[what] = {e: [] for e in ENGINES}
            for r in range(args.repeats):
                for engine in ENGINES:
                    cmd = command(what, engine, work, r, args.steps)
                    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
                    m = timed_run(cmd, env=env, cwd=REPO, log=work / f"{what}-{engine}-{r}.log")
                    m |= {"load_before": load, "outcome": outcome(what, work, engine, r)}
                    results[what][engine].append(m)
                    print(f"{what} {engine} #{r}: {m['wall_s']:.1f} s, max RSS {m['max_rss_mb']:.0f} MiB, "
                          f"tree {m['tree_rss_mb']:.0f} MiB, load {load:.2f}, {m['outcome']}", flush=True)  # fmt: skip
    print(f"\n{os.cpu_count()} CPUs, OMP_NUM_THREADS={args.threads}")
    print("| job | engine | wall (s), median [runs] | max RSS (MiB) | tree RSS (MiB) |")
    print("|---|---|---:|---:|---:|")
    for what, by_engine in results.items():
        for engine, runs in by_engine.items():
            walls = ", ".join(f"{x['wall_s']:.1f}" for x in runs)
            med = statistics.median(x["wall_s"] for x in runs)
            rss = max(x["max_rss_mb"] for x in runs)
            tree = max(x["tree_rss_mb"] for x in runs)
            print(f"| {what} | {engine} | {med:.1f} [{walls}] | {rss:.0f} | {tree:.0f} |")
    if args.out:
        meta = {"config": CONFIG, "steps": args.steps, "threads": args.threads, "cpus": os.cpu_count()}
        args.out.write_text(json.dumps({"meta": meta, "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""Per-phase time per RL step and tokens/s, GRPO vs STEER, on the CPU miniature (run by hand; numbers in the README).

    .venv/bin/python benchmarks/train_step.py [--model DIR] [--steps 12] [--repeats 3]

Builds the warm-started tiny model (configs/warmstart/default.yaml) unless --model is given, prepares the
synthetic task, then trains each method for ``--steps`` steps ``--repeats`` times, interleaved (grpo, steer,
grpo, steer, ...) so that machine noise hits both alike, with tracking off. Reports the median over repeats of
the mean per-step phase times (the first step, which starts the grader pool, is excluded) and STEER's overhead
over GRPO in the update phase and in the whole step.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from steer_bench.config import load_model, validate
from steer_bench.data.prepare import prepare_dataset
from steer_bench.io import read_jsonl
from steer_bench.methods import load_method
from steer_bench.runconfig import TrainConfig
from steer_bench.train import train
from steer_bench.warmstart import WarmstartConfig, warmstart

REPO = Path(__file__).resolve().parents[1]
PHASES = ("time/rollout", "time/grading", "time/old_logprobs", "time/update", "time/step")


def recipe(model: Path, data: Path, steps: int) -> TrainConfig:
    """The miniature's recipe (configs/default.yaml's train section), tracking and validation off."""
    from steer_bench.experiment import load_experiment

    exp = load_experiment(REPO / "configs" / "default.yaml")
    raw = exp.train_config(0).model_dump(mode="json")
    raw.update(steps=steps, track=False, save_every=steps, log_rollouts_every=0)
    raw["model"]["path"], raw["data"]["train"] = str(model), str(data)
    raw["validation"] = {"every_n_steps": 0}
    raw["analysis"] = {"every_n_steps": 0}
    return validate(TrainConfig, raw, source="benchmark")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        model = args.model
        if model is None:
            model = tmp_path / "model"
            warmstart(load_model(WarmstartConfig, REPO / "configs" / "warmstart" / "default.yaml"), model)
        data = tmp_path / "synth_train.parquet"
        prepare_dataset("synth_train", data, limit=2000, levels=[1, 2], check_golds=False)
        cfg = recipe(model, data, args.steps)
        results: dict[str, list[dict[str, float]]] = {"grpo": [], "steer": []}
        for r in range(args.repeats):
            for name in results:
                out = tmp_path / f"{name}-{r}"
                train(cfg, load_method(name), out)
                rows = read_jsonl(out / "metrics.jsonl")[1:]
                per = {k: statistics.mean(row[k] for row in rows) for k in PHASES}
                per["tokens_per_s"] = statistics.mean(row["perf/tokens_per_s"] for row in rows)
                results[name].append(per)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps × {args.repeats} repeats")
    print(f"| method | {' | '.join(k.removeprefix('time/') + ' (s)' for k in PHASES)} | tokens/s |")
    print("|---" * (len(PHASES) + 2) + "|")
    med = {m: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for m, runs in results.items()}
    for m, v in med.items():
        print(f"| {m} | {' | '.join(f'{v[k]:.3f}' for k in PHASES)} | {v['tokens_per_s']:.0f} |")
    for key in ("time/update", "time/step"):
        print(f"STEER overhead in {key}: {100 * (med['steer'][key] / med['grpo'][key] - 1):+.1f}%")


if __name__ == "__main__":
    main()

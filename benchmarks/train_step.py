"""Per-phase time per RL step and tokens/s, GRPO vs STEER, on the CPU miniature (run by hand; docs/benchmarks.md).

    .venv/bin/python benchmarks/train_step.py [--model DIR] [--steps 12] [--repeats 3]

Builds the warm-started tiny model (configs/warmstart/default.yaml) unless --model is given, prepares the
synthetic task, then trains each method for ``--steps`` steps ``--repeats`` times, interleaved (grpo,
clip_higher, steer, grpo, ...) so that machine noise hits all alike, with tracking off. Reports the median over
repeats of the mean per-step phase times (the first step, which starts the grader pool, is excluded) and
STEER's overhead in the update phase and in the whole step, over GRPO and over Clip-Higher (STEER's matched
control: the same ε 0.2/0.28, so the only difference is λ).

After one step the methods' rollouts differ (lengths, hence every phase's time), so whole-step differences mix
STEER's own cost with trajectory noise. STEER's own cost is measured directly too: every ``Method.loss`` call
of the trainer is timed (the loss, λ and the metrics; its backward adds one elementwise product), and
"STEER's loss-call overhead" is the extra loss-call time per step over Clip-Higher's, in % of Clip-Higher's
step time.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from steer_bench.algos import Method
from steer_bench.config import load_model, validate
from steer_bench.config.method import load_method
from steer_bench.config.run import TrainConfig
from steer_bench.data.prepare import prepare_dataset
from steer_bench.files import read_jsonl
from steer_bench.train import train
from steer_bench.warmstart import WarmstartConfig, warmstart

REPO = Path(__file__).resolve().parents[1]
PHASES = ("time/rollout", "time/grading", "time/old_logprobs", "time/update", "time/step")
METHODS = ("grpo", "clip_higher", "steer")


class LossTimer:
    """Wraps ``Method.loss`` (every loss call of the trainer) and sums the wall time of its calls."""

    def __init__(self) -> None:
        self.inner = Method.loss
        self.total = 0.0

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.total += time.perf_counter() - t0
        return out


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
        results: dict[str, list[dict[str, float]]] = {m: [] for m in METHODS}
        timer = LossTimer()
        Method.loss = lambda *a, **k: timer(*a, **k)  # type: ignore[method-assign]
        for r in range(args.repeats):
            for name in results:
                out = tmp_path / f"{name}-{r}"
                timer.total = 0.0
                train(cfg, load_method(name), out)
                rows = read_jsonl(out / "metrics.jsonl")[1:]
                per = {k: statistics.mean(row[k] for row in rows) for k in PHASES}
                per["tokens_per_s"] = statistics.mean(row["perf/tokens_per_s"] for row in rows)
                per["loss_call"] = timer.total / args.steps
                results[name].append(per)
        Method.loss = timer.inner  # type: ignore[method-assign]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.steps} steps × {args.repeats} repeats")
    print(f"| method | {' | '.join(k.removeprefix('time/') + ' (s)' for k in PHASES)} | loss calls (ms) | tokens/s |")
    print("|---" * (len(PHASES) + 3) + "|")
    med = {m: {k: statistics.median(r[k] for r in runs) for k in runs[0]} for m, runs in results.items()}
    for m, v in med.items():
        cells = " | ".join(f"{v[k]:.3f}" for k in PHASES)
        print(f"| {m} | {cells} | {1e3 * v['loss_call']:.2f} | {v['tokens_per_s']:.0f} |")
    for base in ("grpo", "clip_higher"):
        for key in ("time/update", "time/step"):
            print(f"STEER overhead over {base} in {key}: {100 * (med['steer'][key] / med[base][key] - 1):+.1f}%")
    per_repeat = [
        100 * (s["loss_call"] - c["loss_call"]) / c["time/step"]
        for s, c in zip(results["steer"], results["clip_higher"], strict=True)
    ]
    print(
        f"STEER's loss-call overhead: {statistics.median(per_repeat):+.2f}% of Clip-Higher's step time "
        f"(per repeat: {', '.join(f'{x:+.2f}%' for x in per_repeat)})"
    )


if __name__ == "__main__":
    main()

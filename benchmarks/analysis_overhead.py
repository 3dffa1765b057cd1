"""Step-time overhead of the entropy-dynamics analysis (``analysis.every_n_steps``), measured on real training runs,
and the analysis of those runs. Run by hand:

    .venv/bin/python benchmarks/analysis_overhead.py --work /tmp/analysis_bench [--methods grpo steer]
        [--config configs/smoke.yaml] [--every 2] [--set train.key=value ...] [--warmstart-set key=value ...]

For each method, two runs from the same model, data and seed: analysis on (every ``--every`` steps) and off.
The probe consumes no randomness and leaves gradients untouched, so both runs make the same rollouts and updates
(checked: their final parameter checksums must agree); on an analysed step the difference in ``time/update``
is the probe's cost. Printed per method: the median over analysed steps of that paired difference, the probe's own
time (``analysis/seconds``: two no-grad forwards of the first mini-batch, the statistics and the parquet write),
and both relative to the median step time of the run without analysis. Wall times on a shared machine are
noisy; the load average is printed for context. Then ``steer-bench analyze`` runs on the analysed runs
(``<work>/analysis/``). Without ``--model``/``--data`` the script builds the smoke warm start (with
``--warmstart-set`` overrides) and prepares ``synth_train`` (level 1, 400 problems) under ``--work``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from steer_bench import cli
from steer_bench.config import load_model
from steer_bench.data.prepare import prepare_dataset
from steer_bench.experiment import load_experiment
from steer_bench.methods import load_method
from steer_bench.train import train
from steer_bench.warmstart import WarmstartConfig, warmstart

REPO = Path(__file__).resolve().parents[1]


def _inputs(args: argparse.Namespace, work: Path) -> tuple[Path, Path]:
    model = Path(args.model) if args.model else work / "warmstart"
    if not args.model and not (model / "config.json").is_file():
        cfg = load_model(WarmstartConfig, REPO / "configs" / "warmstart" / "smoke.yaml", args.warmstart_set)
        metrics = warmstart(cfg, model)
        print(f"warm start: test accuracy {metrics['test']['accuracy']:.3f}, "
              f"entropy {metrics['test']['response_entropy']:.3f} nats/token")  # fmt: skip
    data = Path(args.data) if args.data else work / "synth_train.parquet"
    if not args.data and not data.is_file():
        prepare_dataset("synth_train", data, limit=400, levels=[1], check_golds=False)
    return model, data


def _metrics(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def bench_method(method: str, args: argparse.Namespace, model: Path, data: Path, work: Path) -> tuple[Path, dict]:
    exp = load_experiment(args.config)
    base = [f"model.path={model}", f"data.train={data}", "validation.every_n_steps=0", "track=false",
            "log_rollouts_every=0", *args.set]  # fmt: skip
    runs, summaries = {}, {}
    for every, folder in ((args.every, "runs"), (0, "runs_off")):
        cfg = exp.train_config(args.seed, [*base, f"analysis.every_n_steps={every}"])
        runs[every] = work / folder / method / f"seed{args.seed}"
        if runs[every].exists():
            raise SystemExit(f"{runs[every]} exists (a run there would resume): use a fresh --work")
        summaries[every] = train(cfg, load_method(method), runs[every])
    on, off = _metrics(runs[args.every]), _metrics(runs[0])
    same = summaries[args.every]["param_checksums"] == summaries[0]["param_checksums"]
    analysed = [(a, b) for a, b in zip(on, off, strict=True) if "analysis/seconds" in a]
    step_off = statistics.median(b["time/step"] for b in off)
    diff = statistics.median(a["time/update"] - b["time/update"] for a, b in analysed)
    probe = statistics.median(a["analysis/seconds"] for a, _ in analysed)
    return runs[args.every], {
        "method": method,
        "analysed steps": len(analysed),
        "same parameters": same,
        "median step s (off)": step_off,
        "median update s (off)": statistics.median(b["time/update"] for b in off),
        "paired Δ update s": diff,
        "probe s": probe,
        "paired Δ / step": diff / step_off,
        "probe / step": probe / step_off,
        "probed tokens (A≠0)": statistics.median(a["analysis/tokens_adv"] for a, _ in analysed),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, help="folder for the model, data, runs and the analysis")
    parser.add_argument("--methods", nargs="+", default=["grpo", "steer"])
    parser.add_argument("--config", default=str(REPO / "configs" / "smoke.yaml"), help="experiment YAML (train:)")
    parser.add_argument("--every", type=int, default=2, help="analysis.every_n_steps of the analysed runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], help="train override key=value (repeatable)")
    parser.add_argument("--model", help="policy folder (default: build the smoke warm start)")
    parser.add_argument("--data", help="prepared training parquet (default: prepare synth_train)")
    parser.add_argument("--warmstart-set", action="append", default=[], help="warm-start override key=value")
    args = parser.parse_args()
    work = Path(args.work)
    model, data = _inputs(args, work)
    rows, analysed = [], []
    for method in args.methods:
        run, row = bench_method(method, args, model, data, work)
        analysed.append(str(run))
        rows.append(row)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads {_threads()}")
    print("| " + " | ".join(rows[0]) + " |\n|" + "---|" * len(rows[0]))
    for r in rows:
        print("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |")
    command = ["analyze", "--runs", *analysed, "--out", str(work / "analysis")]
    print("\nsteer-bench " + " ".join(command))
    cli.main(command)


def _threads() -> int:
    import torch

    return torch.get_num_threads()


if __name__ == "__main__":
    main()

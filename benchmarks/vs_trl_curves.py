"""Does our trainer learn as TRL's ``GRPOTrainer`` does? Reward curves of both on the same job (run by hand).

    .venv/bin/pip install -e '.[trl]'
    .venv/bin/python benchmarks/vs_trl_curves.py [--model DIR] [--data F] [--steps 40] [--lrs 3e-5 1e-4]
                                                 [--seeds 0 1 2] [--threads 1] [--out DIR]

The job is ``vs_trl.py``'s (its plumbing, imported: the recipe read from ``configs/default.yaml``'s train section,
our ``steer-bench train`` call, TRL's worker, the prompt plan that makes TRL draw our prompts in our order and
checks it): the miniature's warm start and training problems, GRPO with the default's batch (prompts × n per
rollout, its mini-batch updates per rollout), ≤ its new tokens, T 1, ε 0.2, no KL, token-mean loss, AdamW with no
weight decay, grad clip 1, the same math-verify ``Grader`` as the reward (truncated responses 0). Per learning
rate and seed, one run of each side for ``--steps`` rollouts, each a fresh process with ``OMP_NUM_THREADS``
``--threads``; the seed sets our trainer's draws (prompts and samples) and TRL's ``seed``, and TRL's plan follows
our draw of that seed, so both sides see the same prompts at each step and differ only in their sampling streams
and code.

Reported per learning rate and side: the mean reward over the first ``--window`` rollouts and the last ``--window``,
mean ± standard error over seeds, and the difference ours − TRL with its standard error (two independent samples
of seeds: √(SE₁² + SE₂²)), so "agree within seed noise" is a number; ``reward_curves.png`` draws every run
(mean over seeds per side, each seed thin). ``--out`` keeps the runs, the figure and ``vs_trl_curves.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from subproc import timed_run
from vs_trl import REPO, our_command, our_prompt_plan, recipe


def run_one(side: str, lr: float, seed: int, ctx: dict[str, Any]) -> dict[str, Any]:
    out: Path = ctx["work"] / f"{side}-lr{lr:g}-seed{seed}"
    env = os.environ | {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": ctx["threads"]}
    env.pop("MLFLOW_TRACKING_URI", None)
    steps = ctx["steps"]
    if side == "ours":
        cmd = our_command(ctx["model"], ctx["data"], steps, out, "off", "rollout", seed=seed, lr=lr)
    else:
        order = our_prompt_plan(ctx["data"], steps, ctx["recipe"]["prompts"], seed)
        spec = {"model": str(ctx["model"]), "data": str(ctx["data"]), "order": order, "steps": steps,
                "out": str(out), "tracking": "off", "recipe": ctx["recipe"], "seed": seed, "lr": lr}  # fmt: skip
        spec_file = ctx["work"] / f"{out.name}.json"
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, str(REPO / "benchmarks" / "vs_trl.py"), "--trl-worker", str(spec_file)]
    load = os.getloadavg()[0]
    m = timed_run(cmd, env=env, cwd=REPO, log=ctx["work"] / f"{out.name}.log")
    if side == "ours":
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        curve = [r["rollout/reward_mean"] for r in rows if "rollout/reward_mean" in r]
    else:
        curve = json.loads((out / "reward_curve.json").read_text())
    if len(curve) != steps:
        raise SystemExit(f"{side} lr {lr:g} seed {seed}: {len(curve)} rewards for {steps} rollouts ({out})")
    print(f"  {side:4s} lr {lr:g} seed {seed}: reward {curve[0]:.3f} → {curve[-1]:.3f}, {m['wall_s']:.0f} s wall, "
          f"load average before {load:.2f}", flush=True)  # fmt: skip
    return {"curve": curve, "wall_s": m["wall_s"], "load_before": load}


def mean_se(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan)


def summarize(runs: dict[str, Any], window: int) -> dict[str, Any]:
    """Per lr: first/last-window mean reward per side (mean ± SE over seeds) and ours − TRL ± SE."""
    out: dict[str, Any] = {}
    for lr, sides in runs.items():
        row: dict[str, Any] = {}
        for part, cut in (("first", slice(0, window)), ("last", slice(-window, None))):
            per = {side: [statistics.fmean(r["curve"][cut]) for r in seeds.values()] for side, seeds in sides.items()}
            (m_o, se_o), (m_t, se_t) = mean_se(per["ours"]), mean_se(per["trl"])
            row[part] = {"ours": [m_o, se_o], "trl": [m_t, se_t], "diff": [m_o - m_t, math.hypot(se_o, se_t)]}
        out[lr] = row
    return out


def draw(runs: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(runs), 3.6), layout="constrained")
    axes = fig.subplots(1, len(runs), squeeze=False)[0]
    for ax, (lr, sides) in zip(axes, runs.items(), strict=True):
        for side, color in (("ours", "tab:blue"), ("trl", "tab:orange")):
            curves = [r["curve"] for r in sides[side].values()]
            steps = range(1, len(curves[0]) + 1)
            for c in curves:
                ax.plot(steps, c, color=color, alpha=0.25, lw=0.8)
            name = "steer-bench" if side == "ours" else "TRL GRPOTrainer"
            mean = [statistics.fmean(v) for v in zip(*curves, strict=True)]
            ax.plot(steps, mean, color=color, lw=2, label=f"{name} (mean of {len(curves)} seeds)")
        ax.set(title=f"lr {lr}", xlabel="rollout step", ylabel="training reward (mean of the step's responses)")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "results/miniature/warmstart")
    parser.add_argument("--data", type=Path, default=REPO / "results/miniature/data/synth_train.parquet")
    parser.add_argument("--steps", type=int, default=40, help="rollouts per run")
    parser.add_argument("--lrs", type=float, nargs="+", default=[3e-5, 1e-4])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--window", type=int, default=10, help="rollouts averaged at each end of a curve")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run")
    parser.add_argument("--out", type=Path, help="keep the runs, the figure and the JSON here")
    args = parser.parse_args()
    for path, make in ((args.model, "results/miniature/warmstart/warmstart.json"),
                       (args.data, "results/miniature/data/synth_train.parquet")):  # fmt: skip
        if not path.exists():
            raise SystemExit(f"{path} not found: build it with `.venv/bin/snakemake --cores 2 {make}`")
    with tempfile.TemporaryDirectory(prefix="vs_trl_curves-") as tmp:
        work = args.out.resolve() if args.out else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        ctx = {"work": work, "model": args.model.resolve(), "data": args.data.resolve(), "recipe": recipe(),
               "steps": args.steps, "threads": str(args.threads)}  # fmt: skip
        runs: dict[str, Any] = {}
        for lr in args.lrs:
            runs[f"{lr:g}"] = {"ours": {}, "trl": {}}
            for seed in args.seeds:  # interleaved, so the machine's load hits both sides alike
                for side in ("ours", "trl"):
                    runs[f"{lr:g}"][side][seed] = run_one(side, lr, seed, ctx)
        s = summarize(runs, args.window)
        draw(runs, work / "reward_curves.png")
        (work / "vs_trl_curves.json").write_text(json.dumps({"args": vars(args) | {"model": str(args.model),
            "data": str(args.data), "out": str(args.out)}, "recipe": ctx["recipe"], "summary": s, "runs": runs},
            indent=1))  # fmt: skip
    w = args.window
    print(f"\nmean reward, mean ± SE over {len(args.seeds)} seeds; ours − TRL ± √(SE₁² + SE₂²)")
    print(f"| lr | steps 1–{w}: ours | TRL | ours − TRL | last {w}: ours | TRL | ours − TRL |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for lr, row in s.items():
        cells = [
            f"{row[p][k][0]:{'+' if k == 'diff' else ''}.3f} ± {row[p][k][1]:.3f}"
            for p in ("first", "last")
            for k in ("ours", "trl", "diff")
        ]
        print(f"| {lr} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Our trainer against TRL's ``GRPOTrainer`` on the CPU miniature, the same job for both (by hand; docs/benchmarks.md).

    .venv/bin/pip install -e '.[trl]'
    .venv/bin/python benchmarks/vs_trl.py [--model DIR] [--steps 2 8] [--repeats 3] [--threads 1]
                                          [--tracking off|mlflow] [--out F.json] [--keep DIR] [--profile ours|trl]

The job, alike on both sides (the shared knobs are read from ``configs/default.yaml``'s train section): the
miniature's warm-started tiny Qwen2 (``--model``, default ``results/miniature/warmstart``), its training data
(``results/miniature/data/synth_train.parquet``: 4,000 synthetic problems of levels 1–3), GRPO with 8 prompts × 8
responses per rollout, ≤ 64 new tokens, temperature 1 and top-p 1 (top-k off) with HF ``generate``, 4 mini-batch
updates of 2 prompts × 8 = 16 sequences per rollout (one micro-batch each; TRL: ``per_device_train_batch_size=16``,
``steps_per_generation=4``), ε = 0.2, no KL, token-mean loss (TRL's ``dapo``: tokens of the mini-batch), AdamW lr
3e-5, no weight decay, grad clip 1, constant schedule, float32 on the CPU (TRL's defaults bf16 and gradient
checkpointing switched off). The reward is the same code on both sides: our math-verify ``Grader`` (1 worker, 5 s
timeout), 1 if correct and 0 otherwise, truncated responses 0. Both take the same prompts in the same order: TRL
gets the dataset in the order our trainer draws it (``shuffle_dataset=False``) and checks every batch against that
plan. Tracking alike: ``off`` (ours ``track=false``, TRL ``report_to=[]``) or ``mlflow`` (both to a fresh local
sqlite store per run). Both save a full checkpoint (weights, optimizer, scheduler) once, at the end; ours computes
its per-step metrics (entropy quantiles, grader health) as always, TRL its own. π_old: ours by default takes the
log-probs ``generate`` computed while sampling (``--old-logprobs rollout``, the miniature's ``train.old_logprobs``,
docs/recipe.md §R17); TRL runs a forward pass for them, as ours does with ``--old-logprobs recompute``.

Each run is a fresh process (ours: ``python -m steer_bench train``, exactly as a Snakemake job; TRL: this
script's ``--trl-worker``), interleaved per repeat as ours(N1), TRL(N1), ours(N2), TRL(N2) so that machine
noise hits both. Reported per side: the marginal wall time per rollout with everything included,
(T(N2) − T(N1)) / (N2 − N1) with T from process start to exit (median and range over repeats), the start-up
share T(N1) − N1·marginal, and the peak memory (``subproc.timed_run``: the process's own max RSS, and the
sampled peak RSS of its process tree, which includes the grading worker). Every process gets
``OMP_NUM_THREADS=--threads``: default 1, what Snakemake gives the miniature's train jobs (``threads: 1``, two
side by side on the 2 cores), and far less sensitive to other load on a shared machine than 2 threads.
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from subproc import timed_run

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "default.yaml"


def recipe() -> dict[str, Any]:
    """The shared knobs, from the miniature's train section (so both sides follow the config if it changes)."""
    import yaml

    t = yaml.safe_load(CONFIG.read_text())["train"]
    r = {
        "prompts": t["prompts_per_step"],
        "n": t["rollout"]["n"],
        "max_new": t["rollout"]["max_new_tokens"],
        "temperature": t["rollout"]["temperature"],
        "top_p": t["rollout"]["top_p"],
        "updates": t["prompts_per_step"] // t["mini_batch_prompts"],
        "lr": t["optim"]["lr"],
        "weight_decay": t["optim"]["weight_decay"],
        "grad_clip": t["optim"]["grad_clip"],
    }
    if t["micro_batch_size"] != t["mini_batch_prompts"] * r["n"]:  # TRL: one micro-batch per optimizer step
        raise SystemExit(f"{CONFIG}: micro_batch_size is not one mini-batch; the TRL side assumes it is")
    return r


# ---------------------------------------------------------------------------------------------- our side
def our_command(
    model: Path,
    data: Path,
    steps: int,
    out: Path,
    tracking: str,
    old_logprobs: str,
    *,
    seed: int = 0,
    lr: float | None = None,
) -> list[str]:
    """The ``steer-bench train`` call of one run: the default config's recipe, the benchmark's knobs set."""
    sets = {
        "steps": steps,
        "old_logprobs": old_logprobs,  # rollout: π_old from generate's scores (docs/recipe.md §R17); TRL recomputes
        "model.path": model,
        "data.train": data,
        "rollout.engine": "hf",
        "track": str(tracking == "mlflow").lower(),
        "validation.every_n_steps": 0,  # TRL validates nothing here either
        "analysis.every_n_steps": 0,
        "probe.every_n_steps": 0,
        "save_every": steps,  # one checkpoint, at the end (as TRL's)
        "log_rollouts_every": 0,
    } | ({"optim.lr": lr} if lr is not None else {})
    flags = [a for k, v in sets.items() for a in ("--set", f"train.{k}={v}")]
    return [sys.executable, "-m", "steer_bench", "train", "--config", str(CONFIG),
            "--method", "grpo", "--seed", str(seed), "--out", str(out), *flags]  # fmt: skip


def our_prompt_plan(data: Path, steps: int, prompts: int, seed: int = 0) -> list[int]:
    """The row indices of the prompts our trainer draws in steps 1..steps (``seed``), in order, followed by every
    other row (so TRL's dataset has all the problems ours has). Computed in a child process: importing the
    trainer here would make this launcher large, and a child's max RSS never reads below its launcher's."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--plan", str(data), str(steps), str(prompts), str(seed)]
    out = subprocess.run(cmd, env=os.environ | {"PYTHONPATH": str(REPO)}, capture_output=True, text=True)
    if out.returncode:
        raise SystemExit(out.stderr.strip() or f"{cmd} failed")
    return json.loads(out.stdout)


def plan_worker(data: Path, steps: int, prompts: int, seed: int) -> list[int]:
    import pandas as pd

    from steer_bench.train import prompt_order  # the trainer's own draw (moves with the trainer)

    n = len(pd.read_parquet(data, columns=["problem_id"]))
    plan = [i for s in range(1, steps + 1) for i in prompt_order(n, seed, s, prompts)]
    if len(set(plan)) != len(plan):
        raise SystemExit(f"{steps} steps × {prompts} prompts wrap around the {n} problems: use fewer steps")
    return plan + sorted(set(range(n)) - set(plan))


# ---------------------------------------------------------------------------------------------- TRL side
def trl_worker(spec: dict[str, Any]) -> None:
    """One TRL ``GRPOTrainer`` run (this process is what is timed)."""
    import pandas as pd
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from steer_bench.grading import Grader

    steps, order, r = spec["steps"], spec["order"], spec["recipe"]
    df = pd.read_parquet(spec["data"], columns=["problem_id", "prompt", "answer"]).iloc[order]
    rows = [
        {"prompt": [dict(m) for m in p], "answer": a, "problem_id": i}
        for p, a, i in zip(df["prompt"], df["answer"], df["problem_id"], strict=True)
    ]
    planned = [row["problem_id"] for row in rows[: steps * r["prompts"]]]
    tokenizer = AutoTokenizer.from_pretrained(spec["model"], padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(spec["model"], dtype=torch.float32)
    eos = {tokenizer.eos_token_id}
    seen: list[str] = []
    curve: list[float] = []  # the mean reward of each generation, written to reward_curve.json

    with Grader(workers=1, timeout=5.0, primary="math_verify") as grader:

        def correctness(completions, completion_ids, answer, problem_id, **_: Any) -> list[float]:
            batch = list(dict.fromkeys(problem_id))  # the generation's prompts, in order
            seen.extend(batch)
            if seen[-len(batch) :] != planned[len(seen) - len(batch) : len(seen)]:
                raise RuntimeError(f"TRL drew prompts {batch}, not the planned ones: the comparison is off")
            texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
            verdicts = grader.grade(texts, list(answer))
            truncated = [ids[-1] not in eos for ids in completion_ids]  # ours: no eos in max_new_tokens -> 0
            rewards = [float(v.correct and not t) for v, t in zip(verdicts, truncated, strict=True)]
            curve.append(sum(rewards) / len(rewards))  # one generation = one of our rollout steps
            return rewards

        args = GRPOConfig(
            output_dir=spec["out"],
            seed=spec.get("seed", 0),
            max_steps=steps * r["updates"],  # optimizer steps
            per_device_train_batch_size=r["prompts"] * r["n"] // r["updates"],
            gradient_accumulation_steps=1,
            steps_per_generation=r["updates"],
            num_generations=r["n"],
            num_iterations=1,
            max_completion_length=r["max_new"],
            temperature=r["temperature"],
            top_p=r["top_p"],
            top_k=0,
            shuffle_dataset=False,
            beta=0.0,
            epsilon=0.2,
            loss_type="dapo",
            scale_rewards="group",
            learning_rate=spec.get("lr", r["lr"]),
            weight_decay=r["weight_decay"],
            max_grad_norm=r["grad_clip"],
            lr_scheduler_type="constant",
            optim="adamw_torch",
            bf16=False,
            gradient_checkpointing=False,
            use_cpu=True,
            logging_steps=1,
            report_to=["mlflow"] if spec["tracking"] == "mlflow" else [],
            save_strategy="steps",
            save_steps=steps * r["updates"],  # one full checkpoint, at the end (as ours)
        )
        trainer = GRPOTrainer(
            model=model,
            reward_funcs=correctness,
            args=args,
            train_dataset=Dataset.from_list(rows),
            processing_class=tokenizer,
        )
        trainer.train()
    if seen != planned:
        raise RuntimeError(f"TRL ran {len(seen)} prompts, {len(planned)} planned")
    Path(spec["out"], "reward_curve.json").write_text(json.dumps(curve))


# ---------------------------------------------------------------------------------------------- the comparison
def run_side(side: str, steps: int, ctx: dict[str, Any], tag: str) -> dict[str, Any]:
    work: Path = ctx["work"]
    out = work / f"{side}-{steps}-{tag}"
    env = os.environ | {"PYTHONPATH": str(REPO), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    if ctx["threads"]:
        env["OMP_NUM_THREADS"] = str(ctx["threads"])
    if ctx["tracking"] == "mlflow":
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{work / f'{out.name}.db'}", "MLFLOW_EXPERIMENT_NAME": "vs_trl"}
    if side == "ours":
        cmd = our_command(ctx["model"], ctx["data"], steps, out, ctx["tracking"], ctx["old_logprobs"])
    else:
        spec = {"model": str(ctx["model"]), "data": str(ctx["data"]), "order": ctx["order"], "steps": steps,
                "out": str(out), "tracking": ctx["tracking"], "recipe": ctx["recipe"]}  # fmt: skip
        spec_file = work / f"{out.name}.json"
        spec_file.write_text(json.dumps(spec))
        cmd = [sys.executable, str(Path(__file__).resolve()), "--trl-worker", str(spec_file)]
    if ctx.get("profile") == side:
        prof = work / f"{out.name}.prof"
        i = cmd.index("-m") if side == "ours" else 1
        cmd = [*cmd[:i], "-m", "cProfile", "-o", str(prof), *cmd[i:]]
    load = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    m = timed_run(cmd, env=env, cwd=REPO, log=work / f"{out.name}.log") | {"load_before": load}
    m["loop_s"] = loop_seconds(side, out, steps, ctx["recipe"]["updates"])
    print(f"  {side:4s} {steps:2d} rollouts: {m['wall_s']:6.1f} s, max RSS {m['max_rss_mb']:5.0f} MiB, "
          f"tree {m['tree_rss_mb']:5.0f} MiB, load average before {load:.2f}", flush=True)  # fmt: skip
    return m


def loop_seconds(side: str, out: Path, steps: int, updates: int) -> float:
    """The time the trainer itself reports for its steps (indicative: the scopes differ). Ours: ``time/step``
    (rollout to the last optimizer step; not the metrics, logging or checkpoint). TRL: ``step_time``
    (generation, rewards and loss + backward of every ``training_step``; not the optimizer steps)."""
    if side == "ours":
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        return sum(r["time/step"] for r in rows)
    state = json.loads((out / f"checkpoint-{steps * updates}" / "trainer_state.json").read_text())
    return sum(e["step_time"] for e in state["log_history"] if "step_time" in e)


def summarize(runs: dict[str, list[dict[str, Any]]], n1: int, n2: int) -> dict[str, Any]:
    """Per side: the marginal time per rollout of each repeat, its median, the start-up, the peak memory."""
    out: dict[str, Any] = {}
    for side, reps in runs.items():
        marg = [(r["high"]["wall_s"] - r["low"]["wall_s"]) / (n2 - n1) for r in reps]
        med = statistics.median(marg)
        out[side] = {
            "marginal_s": med,
            "marginal_s_runs": marg,
            "startup_s": statistics.median(r["low"]["wall_s"] for r in reps) - n1 * med,
            "loop_s_per_rollout": statistics.median(r["high"]["loop_s"] / n2 for r in reps),
            "wall_s_low": [r["low"]["wall_s"] for r in reps],
            "wall_s_high": [r["high"]["wall_s"] for r in reps],
            "max_rss_mb": max(r[k]["max_rss_mb"] for r in reps for k in ("low", "high")),
            "tree_rss_mb": max(r[k]["tree_rss_mb"] for r in reps for k in ("low", "high")),
        }
    out["ratio_time"] = out["ours"]["marginal_s"] / out["trl"]["marginal_s"]
    out["ratio_max_rss"] = out["ours"]["max_rss_mb"] / out["trl"]["max_rss_mb"]
    out["ratio_tree_rss"] = out["ours"]["tree_rss_mb"] / out["trl"]["tree_rss_mb"]
    return out


def print_profile(path: Path, limit: int = 30) -> None:
    stats = pstats.Stats(str(path))
    stats.sort_stats("cumulative").print_stats(limit)
    stats.sort_stats("tottime").print_stats(limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=REPO / "results/miniature/warmstart")
    parser.add_argument("--data", type=Path, default=REPO / "results/miniature/data/synth_train.parquet")
    parser.add_argument("--steps", type=int, nargs=2, default=[2, 8], metavar=("N1", "N2"), help="rollouts")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--tracking", choices=("off", "mlflow"), default="off")
    parser.add_argument("--out", type=Path, help="write the measurements as JSON here")
    parser.add_argument("--profile", choices=("ours", "trl"), help="run one N2 run of this side under cProfile")
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of every run; 0: torch's default")
    choices = ("rollout", "recompute")  # ours: π_old from generate's scores (the miniature's setting) or a pass
    parser.add_argument("--old-logprobs", choices=choices, default="rollout", help="our π_old (docs/recipe.md §R17)")
    parser.add_argument("--keep", type=Path, help="keep every run's folder and log here (default: a temporary folder)")
    parser.add_argument("--trl-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--plan", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.plan:
        print(json.dumps(plan_worker(Path(args.plan[0]), *map(int, args.plan[1:]))))
        return
    if args.trl_worker:
        trl_worker(json.loads(args.trl_worker.read_text()))
        return
    n1, n2 = args.steps
    if not 0 < n1 < n2:
        parser.error(f"--steps needs 0 < N1 < N2, got {n1} {n2}")
    for path, make in ((args.model, "results/miniature/warmstart/model.safetensors"),
                       (args.data, "results/miniature/data/synth_train.parquet")):  # fmt: skip
        if not path.exists():
            raise SystemExit(f"{path} not found: build it with `.venv/bin/snakemake --cores 2 {make}`")
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vs_trl-") as tmp:
        ctx = {
            "work": args.keep.resolve() if args.keep else Path(tmp),
            "model": args.model.resolve(),
            "data": args.data.resolve(),
            "recipe": (knobs := recipe()),
            "order": our_prompt_plan(args.data, n2, knobs["prompts"]),
            "tracking": args.tracking,
            "threads": args.threads,
            "old_logprobs": args.old_logprobs,
        }
        if args.profile:
            ctx["profile"] = args.profile
            run_side(args.profile, n2, ctx, "profile")
            print_profile(ctx["work"] / f"{args.profile}-{n2}-profile.prof")
            return
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "trl": []}
        for r in range(args.repeats):
            print(f"repeat {r + 1}/{args.repeats}", flush=True)
            low = {side: run_side(side, n1, ctx, str(r)) for side in runs}
            high = {side: run_side(side, n2, ctx, str(r)) for side in runs}
            for side in runs:
                runs[side].append({"low": low[side], "high": high[side]})
    s = summarize(runs, n1, n2)
    import torch
    import trl

    threads = args.threads or torch.get_num_threads()  # 0: torch's default in the children too
    print(
        f"\n{os.cpu_count()} CPUs, torch {torch.__version__} ({threads} threads), TRL {trl.__version__}; "
        f"{n1} and {n2} rollouts × {args.repeats} repeats, tracking {args.tracking}"
    )
    head = ("", "marginal s/rollout, median [repeats]", "in-loop s/rollout", "start-up (s)", "max RSS (MiB)",
            "tree RSS (MiB)")  # fmt: skip
    print("| " + " | ".join(head) + " |\n|---" + "|---:" * (len(head) - 1) + "|")
    for side in ("ours", "trl"):
        v = s[side]
        runs_txt = ", ".join(f"{x:.2f}" for x in v["marginal_s_runs"])
        cells = (side, f"{v['marginal_s']:.2f} [{runs_txt}]", f"{v['loop_s_per_rollout']:.2f}",
                 f"{v['startup_s']:.1f}", f"{v['max_rss_mb']:.0f}", f"{v['tree_rss_mb']:.0f}")  # fmt: skip
        print("| " + " | ".join(cells) + " |")
    print(f"ours / TRL: time {s['ratio_time']:.2f}×, max RSS {s['ratio_max_rss']:.2f}×, "
          f"tree RSS {s['ratio_tree_rss']:.2f}×")  # fmt: skip
    if args.out:
        meta = {
            "steps": [n1, n2],
            "repeats": args.repeats,
            "tracking": args.tracking,
            "old_logprobs": args.old_logprobs,
            "cpus": os.cpu_count(),
            "threads": threads,
            "torch": torch.__version__,
            "trl": trl.__version__,
        }
        args.out.write_text(json.dumps({"meta": meta, "summary": s, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()

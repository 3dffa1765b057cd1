"""Step-time overhead of the entropy-dynamics analysis (``analysis.every_n_steps``), and the analysis of the runs
it trains. Run by hand:

    .venv/bin/python benchmarks/analysis_overhead.py --work /tmp/analysis_bench [--methods grpo steer]
        [--config configs/smoke.yaml] [--every 2] [--set key=value ...] [--warmstart-set key=value ...]
        [--repeats 7] [--isolated-only]

Two measurements per method:

1. Training runs, analysis on (every ``--every`` steps) and off, from the same model, data and seed. The probe
   consumes no randomness and leaves gradients untouched, so both runs make the same rollouts and updates
   (checked: their final parameter checksums must agree) and, on an analysed step, the difference in
   ``time/update`` is the probe's cost. Printed: its median over analysed steps, the probe's own time
   (``analysis/seconds``: two no-grad forwards of the first mini-batch, the statistics, the parquet write), both
   relative to the median step time without analysis, and the analysed vs other steps of the analysed run (the
   same moments of machine load). Wall times on a shared machine are noisy (load printed).
2. Isolated: the trainer's update of one rollout (``policy_update``) with and without the probe (+ save),
   alternated ``--repeats`` times on one batch; medians of wall and process-CPU seconds.

Then ``steer-bench analyze`` runs on the analysed runs (``<work>/analysis/``). Without ``--model``/``--data`` the
script builds the smoke warm start (with ``--warmstart-set`` overrides) and prepares ``synth_train`` (level 1,
400 problems) under ``--work``; ``--set`` overrides the experiment's ``train:`` section as ``steer-bench train``'s.

Measured (2 shared CPU cores, load average 0–1.8; the miniature ``configs/default.yaml`` with its warm start,
``--every 2 --set steps=20 --repeats 15``: 128 responses per step, 4 optimizer steps per rollout, probe on the
first mini-batch of 32 responses, ~480 tokens with A ≠ 0): the probe's own time 0.078 s (GRPO) / 0.086 s (STEER)
per analysed step, 7–8 % of a 1.1 s step; analysed vs other steps of the same run 1.112 / 1.018 s (GRPO) and
1.224 / 1.138 s (STEER), +8–9 %; identical final parameters with and without analysis. Isolated: the probe adds
0.065–0.072 s wall, 0.13–0.15 CPU-s (15–19 %) to the 0.40–0.46 s update of one rollout. With the miniature's
``analysis.every_n_steps: 10`` that is under 1 % of training time. Under load 4–7 the same quantities were noisy
(paired differences of −0.35 to +4 s per step), which is why the script reports several views.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from accelerate import Accelerator

from steer_bench import cli
from steer_bench.analysis import EntropyProbe
from steer_bench.config import load_model
from steer_bench.config.method import load_method
from steer_bench.data.prepare import prepare_dataset
from steer_bench.data.schema import load_prepared
from steer_bench.experiment import load_experiment
from steer_bench.rollout import SamplingParams, make_engine
from steer_bench.rollout.model import load_policy, prompt_token_ids
from steer_bench.train import forward, make_optimizer, policy_update, rollout_logprobs, train
from steer_bench.train.update import Learner, UpdateRows
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
        "median step s (on: analysed / other)": "{:.3f} / {:.3f}".format(
            statistics.median(a["time/step"] for a in on if "analysis/seconds" in a),
            statistics.median(a["time/step"] for a in on if "analysis/seconds" not in a),
        ),
        "median update s (off)": statistics.median(b["time/update"] for b in off),
        "paired Δ update s": diff,
        "probe s": probe,
        "paired Δ / step": diff / step_off,
        "probe / step": probe / step_off,
        "probed tokens (A≠0)": statistics.median(a["analysis/tokens_adv"] for a, _ in analysed),
    }


def bench_probe(method: str, args: argparse.Namespace, model_dir: Path, data: Path, work: Path) -> dict:
    """The trainer's update of one rollout (``policy_update``) with and without the probe, alternated ``--repeats``
    times on the same batch; medians of wall and process-CPU seconds (CPU time is steadier on a busy machine).
    A = ±1 per response, so every token is probed (the probe's worst case)."""
    exp = load_experiment(args.config)
    cfg = exp.train_config(args.seed, [f"model.path={model_dir}", f"data.train={data}", "validation.every_n_steps=0",
                                       "track=false", *args.set])  # fmt: skip
    m = load_method(method)
    policy = load_policy(cfg.model)
    prompts = prompt_token_ids(policy.tokenizer, load_prepared(data).head(cfg.prompts_per_step),
                               max_len=cfg.max_prompt_len, source=str(data))  # fmt: skip
    sampling = SamplingParams(max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                              n=cfg.rollout.n, seed=0)  # fmt: skip
    rollout = make_engine("hf", policy.model, policy.tokenizer).generate(prompts, sampling)
    batch = rollout.padded(policy.tokenizer.pad_token_id)
    accelerator = Accelerator(cpu=True)
    optimizer, scheduler = make_optimizer(policy.model, cfg)
    model, optimizer, scheduler = accelerator.prepare(policy.model, optimizer, scheduler)
    old = rollout_logprobs(model, batch, cfg)
    sign = torch.tensor([1.0 if i % 2 else -1.0 for i in range(len(batch.input_ids))])
    adv = sign[:, None] * batch.response_mask
    times: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
    own: list[float] = []  # the probe's own wall time (forwards, statistics, write)
    for r in range(args.repeats):
        for with_probe in (False, True):
            t0, c0 = time.perf_counter(), time.process_time()
            probe = EntropyProbe(r + 1, m.resolve(), cfg, batch, old, adv, forward=forward) if with_probe else None
            rows = UpdateRows(batch, old, adv)
            policy_update(Learner(model, optimizer, scheduler, accelerator), rows, m.resolve(), cfg, probe=probe)
            if probe is not None:
                probe.save(work / "probe_bench" / f"step_{r + 1:06d}.parquet")
                own.append(probe.seconds)
            times[with_probe].append((time.perf_counter() - t0, time.process_time() - c0))
    med = {k: [statistics.median(x[i] for x in v) for i in (0, 1)] for k, v in times.items()}
    return {
        "method": method,
        "sequences": len(batch.input_ids),
        "probed tokens": int(batch.response_mask[: cfg.mini_batch_prompts * cfg.rollout.n].sum()),
        "update wall s": med[False][0],
        "+probe wall s": med[True][0] - med[False][0],
        "update CPU s": med[False][1],
        "+probe CPU s": med[True][1] - med[False][1],
        "+probe / update (CPU)": (med[True][1] - med[False][1]) / med[False][1],
        "probe's own wall s": statistics.median(own),
        "probe's own / update (wall)": statistics.median(own) / med[False][0],
    }


def _table(rows: list[dict]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    fmt = [
        ("| " + " | ".join(f"{v:.3f}" if isinstance(v, float) else str(v) for v in r.values()) + " |") for r in rows
    ]
    return "\n".join(lines + fmt)


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
    parser.add_argument("--repeats", type=int, default=7, help="alternations of the isolated update timing")
    parser.add_argument("--isolated-only", action="store_true", help="skip the training runs and the analysis")
    args = parser.parse_args()
    work = Path(args.work)
    model, data = _inputs(args, work)
    rows, analysed, isolated = [], [], []
    for method in args.methods:
        if not args.isolated_only:
            run, row = bench_method(method, args, model, data, work)
            analysed.append(str(run))
            rows.append(row)
        isolated.append(bench_probe(method, args, model, data, work))
    load = os.getloadavg()[0]
    print(f"\nload average {load:.1f} on {os.cpu_count()} cores; torch threads {torch.get_num_threads()}")
    print(f"\nOne rollout's update with and without the probe ({args.repeats} alternations):\n" + _table(isolated))
    if args.isolated_only:
        return
    print("\nTraining runs, analysis on vs off (paired by step):\n" + _table(rows))
    command = ["analyze", "--runs", *analysed, "--out", str(work / "analysis")]
    print("\nsteer-bench " + " ".join(command))
    cli.main(command)


if __name__ == "__main__":
    main()

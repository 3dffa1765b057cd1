"""``steer-bench warmstart``: tokenizer + tiny Qwen2 model + SFT on the synthetic task (the CPU miniature's start)."""

from __future__ import annotations

import argparse

from steer_bench.commands import add_experiment, named_config


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=False)
    alone = parser.add_argument_group("without --config")
    alone.add_argument("--recipe", help="warm-start YAML (configs/warmstart/*.yaml); --set then addresses it")
    alone.add_argument("--out", help="output model folder (replaced atomically)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.config import load_model
    from steer_bench.warmstart import WarmstartConfig, warmstart

    exp, recipe, overrides = named_config(args, "warmstart", "recipe")
    out = args.out or str(exp.warmstart_dir())
    metrics = warmstart(load_model(WarmstartConfig, recipe, overrides), out)
    test = metrics["test"]
    print(
        f"warmstart: {metrics['params']:,} params, {metrics['sft_steps']} SFT steps, test accuracy (T=1) "
        f"{test['accuracy']:.3f}, response entropy {test['response_entropy']:.3f} nats/token, "
        f"{metrics['wall_time_s']['total']:.0f} s -> {out}"
    )
    return 0

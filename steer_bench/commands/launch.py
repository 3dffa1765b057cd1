"""``steer-bench launch``: run a train or eval job on the devices and nodes it holds, under its launcher.

The Snakefile's train and eval rules call it; everything after the stage goes to ``steer-bench <stage>`` with the
same ``--config`` and ``--set``::

    steer-bench launch --config EXP.yaml --gpus 8 train --method steer --seed 0
    steer-bench launch --config EXP.yaml --gpus 1 eval --row base
    steer-bench launch --config EXP.yaml --gpus 8 preflight         # launched as a train job

``--gpus`` is the job's ``gpu`` resource. Locally it takes that many free devices (``CUDA_VISIBLE_DEVICES``); under
SLURM it checks that the allocation shows the job that many. With ``resources.train_nodes`` > 1 the train stage
runs one launcher per node through ``srun``. How each is resolved: :mod:`steer_bench.launch`.
"""

from __future__ import annotations

import argparse

from steer_bench.commands import add_experiment


def configure(parser: argparse.ArgumentParser) -> None:
    add_experiment(parser, required=True)
    parser.add_argument("--gpus", type=int, default=0, help="GPUs the job holds (its gpu resource; all nodes)")
    parser.add_argument("--gpu-wait", type=float, default=300.0, help="seconds to wait for free local GPUs")
    parser.add_argument("--node-task", action="store_true", help=argparse.SUPPRESS)  # set by the srun it starts
    parser.add_argument("stage", choices=["train", "preflight", "eval"])
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the stage's options (e.g. --method grpo --seed 0)")


def run(args: argparse.Namespace) -> int:
    from steer_bench.experiment import load_experiment, split_overrides
    from steer_bench.launch import Job, launch

    exp = load_experiment(args.config, split_overrides(args.overrides)[0])
    common = ["--config", args.config, *(item for o in args.overrides for item in ("--set", o))]
    job = Job(
        stage=args.stage,
        argv=[args.stage, *common, *args.args],
        gpus=args.gpus,
        gpu_wait=args.gpu_wait,
        again=["launch", *common, "--gpus", str(args.gpus), "--node-task", args.stage, *args.args],
    )
    launch(exp, job, node_task=args.node_task)
    return 0  # not reached: launch replaces this process with the job

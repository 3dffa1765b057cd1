# steer-bench pipeline: prepare → (warmstart) → train (method × seed) → eval → report.
#
#   snakemake --cores 2                                          # the CPU miniature (configs/default.yaml)
#   snakemake --cores 2 --configfile configs/smoke.yaml          # the 3-minute smoke pipeline
#   snakemake --configfile configs/paper/table3_7b.yaml --workflow-profile profiles/slurm   # the paper, on SLURM
#   snakemake --cores 2 results/miniature/runs/steer/seed0/train.done                      # one training run
#
# Every rule calls one `steer-bench` subcommand. The experiment YAML is validated (methods, benchmarks,
# keys, seeds) before any job starts; the layout of results/ is defined in steer_bench/experiment/config.py.

import os
import sys
from pathlib import Path

from steer_bench.errors import SteerBenchError
from steer_bench.experiment import load_experiment
from steer_bench.launch import rule_resources

CONFIG = str(workflow.configfiles[-1]) if workflow.configfiles else "configs/default.yaml"
try:
    EXP = load_experiment(CONFIG)
except SteerBenchError as e:
    raise WorkflowError(f"invalid experiment config: {e}") from None

PY = sys.executable  # the interpreter running snakemake (the project's venv)
SB = f"{PY} -m steer_bench"
# Train and eval jobs go through `steer-bench launch`: it takes the job's GPUs (free local devices, or SLURM's),
# its nodes, and runs `accelerate launch` when the experiment names an accelerate config (steer_bench/launch.py).
LAUNCH = f"{SB} launch"

ROOT = str(EXP.root)
TREE = bool(EXP.tree)
ONLY = [r.name for r in EXP.eval_only]
RES = EXP.resources
ANALYSIS = EXP.train_config(EXP.seeds[0]).analysis.every_n_steps > 0
# One MLflow store per experiment unless the user points at a server (recommended on a cluster, docs/recipe.md §R16).
os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{Path(ROOT).resolve()}/mlflow.db")

wildcard_constraints:
    method="[A-Za-z0-9_.-]+",
    seed=r"\d+",
    dataset="[A-Za-z0-9_]+",
    row="[A-Za-z0-9_.-]+",

localrules: all, analyze, report


VIEWS = EXP.selection_views()  # eval.selection_views: the run's other checkpoints, eval/<m>/seed<k>/<view>/


def run_evals():
    main = [f"{ROOT}/eval/{m}/seed{s}/eval.done" for m in EXP.methods for s in EXP.seeds]
    return main + [f"{ROOT}/eval/{m}/seed{s}/{v}/eval.done" for m in EXP.methods for s in EXP.seeds for v in VIEWS]


# `all` names every leaf as well as the report: a deleted run (or eval) is then missing *and* requested, so
# Snakemake redoes exactly that branch and, because its outputs are newer, the report (a missing input alone
# never triggers a re-run in Snakemake).
rule all:
    input:
        f"{ROOT}/report/report.md",
        [f"{ROOT}/runs/{m}/seed{s}/train.done" for m in EXP.methods for s in EXP.seeds],
        run_evals(),
        [f"{ROOT}/eval/{r}/eval.done" for r in ONLY],


rule prepare:
    output:
        f"{ROOT}/data/{{dataset}}.parquet",
    log:
        f"{ROOT}/logs/prepare/{{dataset}}.log",
    resources:
        mem_mb=4000, runtime=30
    params:
        sb=SB,
        exp=CONFIG,
    shell:
        "{params.sb} prepare --config {params.exp} --dataset {wildcards.dataset} > {log} 2>&1"


rule warmstart:
    input:
        EXP.warmstart or [],
    output:
        f"{ROOT}/warmstart/warmstart.json",
    log:
        f"{ROOT}/logs/warmstart.log",
    threads: 2
    priority: 10  # everything but the tree waits for it: first, not after the tree
    resources:
        mem_mb=4000, runtime=60
    params:
        sb=SB,
        exp=CONFIG,
    shell:
        "{params.sb} warmstart --config {params.exp} > {log} 2>&1"


rule preflight:
    input:
        train=f"{ROOT}/data/{EXP.data.train}.parquet",
        val=[f"{ROOT}/data/{EXP.data.validation}.parquet"] if EXP.data.validation else [],
        model=[f"{ROOT}/warmstart/warmstart.json"] if EXP.warmstart else [],
    output:
        f"{ROOT}/preflight/preflight.json",
    log:
        f"{ROOT}/logs/preflight.log",
    threads: 1
    params:
        launch=LAUNCH,
        exp=CONFIG,
    resources:
        **rule_resources(EXP, "train"),
    shell:
        "{params.launch} --config {params.exp} --gpus {resources.gpu} preflight > {log} 2>&1"


rule train:
    input:
        train=f"{ROOT}/data/{EXP.data.train}.parquet",
        val=[f"{ROOT}/data/{EXP.data.validation}.parquet"] if EXP.data.validation else [],
        sel=[f"{ROOT}/data/{EXP.data.selection}.parquet"] if EXP.data.selection else [],
        model=[f"{ROOT}/warmstart/warmstart.json"] if EXP.warmstart else [],
        preflight=[f"{ROOT}/preflight/preflight.json"] if EXP.preflight else [],  # measured and passed first
    output:
        f"{ROOT}/runs/{{method}}/seed{{seed}}/train.done",
    log:
        f"{ROOT}/logs/train/{{method}}-seed{{seed}}.log",
    threads: 1
    params:
        launch=LAUNCH,
        exp=CONFIG,
    resources:
        **rule_resources(EXP, "train"),
    shell:
        "{params.launch} --config {params.exp} --gpus {resources.gpu} train --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"


if EXP.eval.jobs == "per_run":

    rule eval_run:
        input:
            run=f"{ROOT}/runs/{{method}}/seed{{seed}}/train.done",
            data=[f"{ROOT}/data/{b}.parquet" for b in EXP.data.benchmarks],
        output:
            f"{ROOT}/eval/{{method}}/seed{{seed}}/eval.done",
            [f"{ROOT}/eval/{{method}}/seed{{seed}}/{v}/eval.done" for v in VIEWS],
        log:
            f"{ROOT}/logs/eval/{{method}}-seed{{seed}}.log",
        threads: 1
        resources:
            **rule_resources(EXP, "eval"),
        params:
            launch=LAUNCH,
            exp=CONFIG,
        shell:
            "{params.launch} --config {params.exp} --gpus {resources.gpu} eval --method {wildcards.method} --seed {wildcards.seed} > {log} 2>&1"

else:  # eval.jobs: one — the eval-only rows and every trained run in one job, one engine loading each in turn

    rule eval_all:
        input:
            runs=[f"{ROOT}/runs/{m}/seed{s}/train.done" for m in EXP.methods for s in EXP.seeds],
            data=[f"{ROOT}/data/{b}.parquet" for b in EXP.data.benchmarks],
            model=[f"{ROOT}/warmstart/warmstart.json"] if EXP.warmstart else [],
        output:
            run_evals(),
            [f"{ROOT}/eval/{r}/eval.done" for r in ONLY],
        log:
            f"{ROOT}/logs/eval/all.log",
        threads: 2
        resources:
            **(rule_resources(EXP, "eval") | {"runtime": RES.eval_minutes * (len(run_evals()) + len(ONLY))}),
        params:
            launch=LAUNCH,
            exp=CONFIG,
        shell:
            "{params.launch} --config {params.exp} --gpus {resources.gpu} eval --all > {log} 2>&1"


if EXP.eval.jobs == "per_run":

    rule eval_only:
        input:
            data=[f"{ROOT}/data/{b}.parquet" for b in EXP.data.benchmarks],
            model=[f"{ROOT}/warmstart/warmstart.json"] if EXP.warmstart else [],
        output:
            f"{ROOT}/eval/{{row}}/eval.done",
        log:
            f"{ROOT}/logs/eval/{{row}}.log",
        wildcard_constraints:
            row="|".join(ONLY) if ONLY else "$^",
        threads: 1
        resources:
            **rule_resources(EXP, "eval"),
        params:
            launch=LAUNCH,
            exp=CONFIG,
        shell:
            "{params.launch} --config {params.exp} --gpus {resources.gpu} eval --row {wildcards.row} > {log} 2>&1"


rule tree:
    input:
        EXP.tree or [],
    output:
        f"{ROOT}/tree/tree.md",
    log:
        f"{ROOT}/logs/tree.log",
    threads: 2
    resources:
        mem_mb=4000, runtime=30
    params:
        sb=SB,
        exp=CONFIG,
    shell:
        "{params.sb} tree --config {params.exp} > {log} 2>&1"


rule analyze:
    input:
        [f"{ROOT}/runs/{m}/seed{s}/train.done" for m in EXP.methods for s in EXP.seeds],
    output:
        f"{ROOT}/analysis/analysis.md",
    log:
        f"{ROOT}/logs/analyze.log",
    params:
        sb=SB,
        exp=CONFIG,
    shell:
        "{params.sb} analyze --config {params.exp} > {log} 2>&1"


rule report:
    input:
        run_evals(),
        [f"{ROOT}/eval/{r}/eval.done" for r in ONLY],
        [f"{ROOT}/tree/tree.md"] if TREE else [],
        [f"{ROOT}/analysis/analysis.md"] if ANALYSIS else [],
    output:
        f"{ROOT}/report/report.md",
    log:
        f"{ROOT}/logs/report.log",
    params:
        sb=SB,
        exp=CONFIG,
    shell:
        "{params.sb} report --config {params.exp} > {log} 2>&1"

"""The trimmed paper rehearsal (configs/paper/rehearsal.yaml cut further: one method, 2 steps, 2 problems per
benchmark, a 30-step warm start), shared by the local run (tests/system/test_rehearsal.py) and the SLURM run
(tests/system/test_slurm.py): the config, the `snakemake` environment and the checks of what it wrote."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from steer_bench.config import deep_merge
from steer_bench.files import read_json, read_jsonl

REPO = Path(__file__).resolve().parents[1]
REHEARSAL = REPO / "configs" / "paper" / "rehearsal.yaml"
BENCHMARKS = ["aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench"]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile")]


def slurm_cluster_up() -> bool:
    """Whether the local cluster of scripts/slurm_local.sh answers, with both nodes up."""
    if shutil.which("sinfo") is None:
        return False
    run = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %t"], capture_output=True, text=True, check=False)
    states = dict(line.split() for line in run.stdout.splitlines() if len(line.split()) == 2)
    return run.returncode == 0 and {states.get(n) for n in ("n1", "n2")} <= {"idle", "mix", "alloc"}


def trimmed_config(workdir: Path, name: str, **changes: Any) -> Path:
    """Write the trimmed rehearsal (``changes`` deep-merged over it) into ``workdir``; the configs are linked in."""
    if not (workdir / "configs").exists():
        (workdir / "configs").symlink_to(REPO / "configs")
    warm = yaml.safe_load((REPO / "configs" / "warmstart" / "rehearsal.yaml").read_text())
    warm["sft"] |= {"max_steps": 30, "eval_every": 30, "warmup_steps": 5}  # a format-only warm start: seconds
    warm["task"] |= {"n_test": 8}
    (workdir / "warm.yaml").write_text(yaml.safe_dump(warm))
    trimmed = {
        "extends": str(REHEARSAL), "name": name, "methods": ["steer"], "eval_only": [],
        "warmstart": str(workdir / "warm.yaml"),
        "data": {"limits": {"dapo_math_17k": 8, **dict.fromkeys(BENCHMARKS, 2)}},
        "train": {"steps": 2, "save_every": 1, "validation": {"every_n_steps": 1}},
    }  # fmt: skip
    config = workdir / f"{name}.yaml"
    config.write_text(yaml.safe_dump(deep_merge(trimmed, changes)))
    return config


def snakemake_env(workdir: Path) -> dict[str, str]:
    """The environment of `snakemake` and of every job it starts (locally or through sbatch --export=ALL): the
    worktree's code first on PYTHONPATH, one CPU thread per process, a per-test MLflow store."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir / 'mlflow.db'}", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": path}  # fmt: skip
    env.setdefault("STEER_BENCH_SHARED_DATA", str(REPO.parent / "shared" / "data"))
    return env


def logs_tail(root: Path) -> str:
    """The last lines of every job log, for assertion messages."""
    logs = sorted((root / "logs").rglob("*.log")) if (root / "logs").exists() else []
    return "".join(f"\n== {p}\n{p.read_text()[-2000:]}" for p in logs)


def check_training(run: Path, ranks: int) -> None:
    """A 2-step run of ``ranks`` ranks in sync, validated every step, weight syncs within bf16 rounding, bf16 logits,
    no unsharded gradient, sharded (DCP) checkpoints."""
    done = read_json(run / "train.done")
    assert len(done["param_checksums"]) == ranks
    assert len(set(done["param_checksums"])) == 1  # every rank holds the same weights
    assert done["best_step"] in (1, 2)
    rows = read_jsonl(run / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    # The trainer computes in bf16 (FSDP2's policy), the CPU engine in float32: engine-vs-trainer log-probs differ by
    # bf16 rounding — unit roundoff 2^-8 ≈ 4e-3 of logits of magnitude ≲ 10, through 2 layers — which bounds the
    # mean |Δ logp| at ~0.1 (the self-check's bf16 tolerance; measured 0.004–0.005 on an AMD EPYC). A sync that did
    # not land is ≥ 1.
    assert all(r["sync/probe_gap_max"] <= 0.1 and r["rollout/logprob_gap"] <= 0.1 for r in rows)
    assert all(r["train/logits_bits_max"] == 16 for r in rows)  # bf16 logits reached the loss: no float32 copy
    assert all(r["train/unsharded_grad_mb_max"] == 0 for r in rows)  # every micro-batch reduce-scattered
    assert all("val/avg_at_k" in r for r in rows)
    trainer_state = {p.name for p in (run / "checkpoints" / "last" / "trainer_state").iterdir()}
    # DCP's index and one shard file per rank (FSDP2), each rank's scheduler and RNG
    assert {".metadata", *(f"__{r}_0.distcp" for r in range(ranks)), *(f"rank{r}.pt" for r in range(ranks))} <= (
        trainer_state
    )


def check_preflight(root: Path, ranks: int) -> dict[str, Any]:
    """steer-bench preflight ran first (the recipe's ``preflight: true``) on every rank, passed its checks, and left
    only its numbers (its run folder holds checkpoints as large as the real ones)."""
    record = read_json(root / "preflight" / "preflight.json")
    assert [(c["check"], c["passed"]) for c in record["checks"]] == [("memory", True), ("disk", True),
                                                                      ("timeout", True)]  # fmt: skip
    assert len(record["phases"]) == ranks
    assert all({"collect", "update", "validation", "checkpoint", "resume"} <= set(p) for p in record["phases"])
    assert all(r["rollout/truncation_rate"] == 1.0 for r in record["steps"])  # the worst case: every response full
    assert record["plan"]["runs"] == 1
    assert record["plan"]["run_hours"] > 0
    assert not (root / "preflight" / "run").exists()
    return record


def check_evaluation_and_report(root: Path, method: str) -> None:
    """Every benchmark evaluated with the paper protocol's k, and the report with the paper's Table 3 beside ours."""
    for bench in BENCHMARKS:
        summary = read_json(root / "eval" / method / "seed0" / bench / "summary.json")
        assert summary["complete"] is True
        assert summary["n_problems"] == 2
        assert summary["k"] == (2 if bench in ("aime24", "aime25", "amc23") else 1)
    report = root / "report"
    vs = list(csv.DictReader((report / "vs_paper.csv").open()))
    assert vs, "vs_paper.csv is empty"
    text = (report / "vs_paper.md").read_text()
    assert "STEER" in text
    assert any(ch.isdigit() for ch in text)
    assert json.loads(json.dumps(vs))  # plain rows

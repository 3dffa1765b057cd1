"""A short training config on the tiny model for tests (4 prompts × 4 responses, ≤ 20 tokens, no tracking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steer_bench.config import validate
from steer_bench.config.run import TrainConfig


def make_cfg(model_dir: Path, data: dict[str, Path], **over: Any) -> TrainConfig:
    raw: dict[str, Any] = {
        "experiment": "test",
        "model": {"path": str(model_dir)},
        "data": {"train": str(data["synth_train"])},
        "rollout": {"engine": "hf", "n": 4, "max_new_tokens": 20},
        "optim": {"lr": 1e-3, "weight_decay": 0.0},
        "steps": 2,
        "prompts_per_step": 4,
        "mini_batch_prompts": 2,  # 2 optimizer steps per rollout: the second is off-policy (kl_cov acts)
        "micro_batch_size": 4,
        "max_prompt_len": 40,
        "save_every": 1,
        "log_rollouts_every": 1,
        "track": False,
    }
    for key, value in over.items():
        node = raw
        *path, last = key.split("__")
        for p in path:
            node = node.setdefault(p, {})
        node[last] = value
    return validate(TrainConfig, raw, source="test")


def experiment_yaml(tmp: Path, model_dir: Path, data: dict[str, Path], *, name: str, steps: int, **train: Any) -> Path:
    """An experiment YAML whose layout points at prepared data and the tiny model (for the CLI and Snakemake)."""
    import yaml

    root = tmp / "results" / name
    (root / "data").mkdir(parents=True)
    for dataset, path in data.items():
        (root / "data" / f"{dataset}.parquet").symlink_to(path)
    exp = {
        "name": name, "results_dir": str(tmp / "results"), "model_path": str(model_dir),
        "data": {"train": "synth_train", "benchmarks": ["synth_test"]}, "methods": ["grpo"], "seeds": [0],
        "train": {"rollout": {"n": 4, "max_new_tokens": 20}, "optim": {"lr": 1e-3, "weight_decay": 0.0},
                  "steps": steps, "prompts_per_step": 4, "mini_batch_prompts": 2, "micro_batch_size": 4,
                  "max_prompt_len": 40, "save_every": 2, "track": False} | train,
    }  # fmt: skip
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def deterministic(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    """Metric rows without timings and memory readings (which differ between any two runs)."""
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "mem/"))} for r in rows]


def train_until_crash(cfg: TrainConfig, preset: Any, out: Path, monkeypatch: Any, *, step: int) -> None:
    """Train into ``out`` and crash as step ``step`` starts (its checkpoint holds step − 1), as a killed job would;
    a plain ``train`` afterwards resumes."""
    import pytest

    import steer_bench.train.loop as loop
    from steer_bench.train import train

    real_collect = loop.collect

    def crash(run, grader, number):  # type: ignore[no-untyped-def]
        if number == step:
            raise RuntimeError(f"simulated crash in step {step}")
        return real_collect(run, grader, number)

    with monkeypatch.context() as m:
        m.setattr(loop, "collect", crash)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(cfg, preset, out)

"""The testbed's study config: settings (task + training recipe) × methods × paired seeds."""

from __future__ import annotations

import re

from pydantic import Field, model_validator

from steer_bench.config import StrictModel
from steer_bench.tree.task import TreeTaskConfig

_LABEL = re.compile(r"[A-Za-z0-9_.\-]+")


class TreeTrainConfig(StrictModel):
    steps: int = Field(ge=1)
    problems_per_step: int = Field(ge=1)
    samples_per_problem: int = Field(ge=1)
    """n, the group size of the advantage estimators."""
    minibatches: int = Field(ge=1)
    """Optimizer steps per rollout (the paper: 512 / 32 = 16)."""
    shuffle: bool
    """Deal the rollout's sequences to mini-batches at random. In an LM every update moves every prompt's
    policy, so the later mini-batches of a rollout are off-policy; a table with a state per problem is only
    off-policy when a state's tokens are spread over several mini-batches, which shuffling does."""
    lr: float = Field(gt=0)
    """SGD step size on the logit table (the token-mean loss divides each token's gradient by the mini-batch's
    token count, hence values ≫ 1)."""
    init_std: float = Field(ge=0)
    """Initial logits ~ N(0, init_std²): 0 is the uniform policy; larger is a more peaked 'pretrained' start."""
    eval_every: int = Field(ge=1)
    """Exact accuracy / entropy / pass@k of the whole policy every N steps (and at the end)."""
    analysis_every: int = Field(ge=0)
    """Every N steps, probe one vanilla policy-gradient step and compare Ω with the exact ΔH (0 = off)."""
    pass_k: list[int] = Field(min_length=1)

    @model_validator(mode="after")
    def _divisible(self) -> TreeTrainConfig:
        batch = self.problems_per_step * self.samples_per_problem
        if batch % self.minibatches:
            raise ValueError(f"minibatches ({self.minibatches}) must divide the rollout's {batch} sequences")
        return self


class SettingConfig(StrictModel):
    description: str
    task: TreeTaskConfig
    train: TreeTrainConfig
    matched_accuracy: list[float] = Field(min_length=1)
    """Expected-accuracy levels at which the methods' entropies are compared (first crossing, interpolated)."""
    methods: list[str] | None = None
    """Labels of the study's methods run in this setting (None: all)."""

    @model_validator(mode="after")
    def _enough_problems(self) -> SettingConfig:
        if self.train.problems_per_step > self.task.problems:
            raise ValueError(
                f"train.problems_per_step ({self.train.problems_per_step}) > task.problems ({self.task.problems})"
            )
        return self


class MethodSpec(StrictModel):
    label: str
    """Name in tables and figures (letters, digits, _ . -)."""
    preset: str
    """A method preset of configs/methods/ (loaded with steer_bench.config.method.load_method)."""
    overrides: list[str] = []
    """``key=value`` overrides of the preset (e.g. ``loss.params.weight_min=0.5``)."""
    lr_scale: float = Field(1.0, gt=0)
    """Multiplies the setting's learning rate (the GRPO learning-rate control)."""
    note: str = ""
    """Shown beside the label in the report (e.g. 'our ablation')."""

    @model_validator(mode="after")
    def _label(self) -> MethodSpec:
        if not _LABEL.fullmatch(self.label):
            raise ValueError(f"label {self.label!r} may only contain letters, digits, '_', '.', '-'")
        return self


class StudyConfig(StrictModel):
    seeds: int = Field(ge=1)
    """Seeds 0..seeds-1; seed s fixes the task draw and the initial table for every method (paired seeds)."""
    workers: int = Field(ge=1)
    """Processes (one torch thread each)."""
    reference: str
    """Label of the method the others are paired against (GRPO)."""
    settings: dict[str, SettingConfig] = Field(min_length=1)
    methods: list[MethodSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> StudyConfig:
        labels = [m.label for m in self.methods]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"duplicate method labels: {dupes}")
        if self.reference not in labels:
            raise ValueError(f"reference {self.reference!r} is not a method label; labels: {labels}")
        bad = [name for name in self.settings if not _LABEL.fullmatch(name)]
        if bad:
            raise ValueError(f"setting names {bad} may only contain letters, digits, '_', '.', '-'")
        for name, setting in self.settings.items():
            unknown = sorted(set(setting.methods or []) - set(labels))
            if unknown:
                raise ValueError(f"settings.{name}.methods: unknown labels {unknown}; labels: {labels}")
            if setting.methods is not None and self.reference not in setting.methods:
                raise ValueError(f"settings.{name}.methods must include the reference {self.reference!r}")
        return self

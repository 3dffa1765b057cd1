"""Method presets: ``configs/methods/<name>.yaml`` validated into a typed :class:`MethodConfig`.

A method is an advantage estimator (:data:`steer_bench.algos.ADVANTAGES`) plus a policy loss
(:data:`steer_bench.algos.POLICY_LOSSES`) with its clip settings, aggregation and entropy bonus. Names and
parameters are checked against the registries (a registered function's hyperparameters are its keyword-only
parameters), and every preset is run once on a tiny batch at load time, so a config that loads can train.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator, model_validator

from steer_bench.algos import (
    ADVANTAGES,
    GROUP_ESTIMATORS,
    POLICY_LOSSES,
    compute_advantages,
    estimator_needs_entropy,
    mini_batch_stats,
    policy_loss,
)
from steer_bench.algos.registry import check_params, lookup
from steer_bench.config import StrictModel, load_model
from steer_bench.errors import SteerBenchError

CONFIGS_DIR = Path(__file__).parents[1] / "configs"


class AdvantageConfig(StrictModel):
    estimator: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup("advantage estimator", ADVANTAGES, v)
        return v

    @model_validator(mode="after")
    def _params(self) -> AdvantageConfig:
        check_params("advantage estimator", self.estimator, ADVANTAGES[self.estimator], self.params)
        return self


class LossConfig(StrictModel):
    name: str
    clip_low: float | None  # ε_low; None: no lower bound on the ratio
    clip_high: float | None  # ε_high; None: no upper bound
    clip_c: float | None  # dual-clip constant c > 1; None: no dual clip
    agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
    entropy_coef: float  # β of the entropy bonus (loss −= β·agg(H))
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup("policy loss", POLICY_LOSSES, v)
        return v

    @model_validator(mode="after")
    def _params(self) -> LossConfig:
        check_params("policy loss", self.name, POLICY_LOSSES[self.name].fn, self.params)
        return self


class MethodConfig(StrictModel):
    name: str
    label: str  # display name; the paper's table row where the method is in the paper
    description: str
    ablation: bool = False  # True: our ablation, not in the STEER paper
    advantage: AdvantageConfig
    loss: LossConfig

    @model_validator(mode="after")
    def _runs(self) -> MethodConfig:
        _dry_run(self)
        return self

    def advantage_params(self) -> dict[str, Any]:
        """Keyword arguments for ``compute_advantages`` (besides ``entropy``)."""
        return dict(self.advantage.params)

    def loss_params(self) -> dict[str, Any]:
        """Keyword arguments for ``policy_loss``: clip settings, aggregation, entropy bonus and the loss's own."""
        shared = self.loss.model_dump(include={"clip_low", "clip_high", "clip_c", "agg", "entropy_coef"})
        return shared | dict(self.loss.params)

    @property
    def needs_groups(self) -> bool:
        """The advantage baseline is a group statistic: rollout.n must be ≥ 2."""
        return self.advantage.estimator in GROUP_ESTIMATORS

    @property
    def needs_entropy(self) -> bool:
        """``policy_loss`` needs the current policy's entropy (with gradient if :attr:`needs_entropy_grad`)."""
        return POLICY_LOSSES[self.loss.name].needs_entropy or self.needs_entropy_grad

    @property
    def needs_entropy_grad(self) -> bool:
        """The current entropy must carry gradient (the entropy bonus)."""
        return self.loss.entropy_coef != 0

    @property
    def needs_old_entropy(self) -> bool:
        """The rollout policy's entropy is used (STEER's Ω, entropy-shaped advantages)."""
        return POLICY_LOSSES[self.loss.name].needs_old_entropy or estimator_needs_entropy(self.advantage.estimator)

    @property
    def needs_mini_stats(self) -> bool:
        """Call ``mini_batch_stats`` once per mini-batch (a no-grad pass of the current policy): scope=mini."""
        return POLICY_LOSSES[self.loss.name].batch_stats is not None and self.loss.params.get("scope") == "mini"


def _dry_run(method: MethodConfig) -> None:
    """Run the method on a 2×3 batch so that bad parameter values fail at load time, not mid-training."""
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    logp = torch.tensor([[-0.1, -2.0, -0.5], [-1.0, -0.3, 0.0]], requires_grad=True)
    entropy = torch.full((2, 3), 0.7, requires_grad=True)
    try:
        adv = compute_advantages(
            method.advantage.estimator,
            torch.tensor([1.0, 0.0]),
            torch.tensor([0, 0]),
            mask,
            entropy=entropy.detach(),
            **method.advantage_params(),
        )
        tensors = (logp, logp.detach() - 0.1, adv, mask)
        extra = mini_batch_stats(method.loss.name, *tensors, entropy, old_entropy=entropy, **method.loss_params())
        loss, _ = policy_loss(
            method.loss.name, *tensors, entropy, old_entropy=entropy.detach(), **method.loss_params(), **extra
        )
        loss.backward()
    except (ValueError, TypeError) as e:
        raise ValueError(f"method {method.name!r} does not run: {e}") from e


def methods_dir(configs_dir: str | os.PathLike[str] | None = None) -> Path:
    return Path(configs_dir or CONFIGS_DIR) / "methods"


def list_methods(configs_dir: str | os.PathLike[str] | None = None) -> list[str]:
    """Names of the presets in ``configs/methods/``."""
    return sorted(p.stem for p in methods_dir(configs_dir).glob("*.yaml"))


def load_method(
    name_or_path: str | os.PathLike[str],
    overrides: list[str] | None = None,
    *,
    configs_dir: str | os.PathLike[str] | None = None,
) -> MethodConfig:
    """A preset by name (``configs/methods/<name>.yaml``) or a YAML path, with ``key.sub=value`` overrides."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = methods_dir(configs_dir) / f"{name_or_path}.yaml"
        if not path.is_file():
            valid = ", ".join(list_methods(configs_dir))
            raise SteerBenchError(f"unknown method {str(name_or_path)!r}; valid methods: {valid}")
    return load_model(MethodConfig, path, overrides)

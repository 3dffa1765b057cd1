"""Method presets: ``configs/methods/<name>.yaml`` validated into a typed :class:`MethodConfig`, resolved once
into the objective library's :class:`~steer_bench.algos.Method` (:meth:`MethodConfig.resolve`).

A method is an advantage estimator plus a policy loss (one intervention of ``steer_bench/algos/interventions/``)
with its clip settings, aggregation and entropy bonus. Names and hyperparameters are checked against the
library, and every preset is run once on a tiny batch at load time, so a config that loads can train.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from steer_bench.algos import ADVANTAGES, Method, intervention_class, make_method
from steer_bench.algos.registry import lookup
from steer_bench.config.base import StrictModel, load_model
from steer_bench.errors import SteerBenchError

CONFIGS_DIR = Path(__file__).parents[2] / "configs"


class AdvantageConfig(StrictModel):
    estimator: str  # steer_bench.algos.advantages (grpo, rloo, opo, w_reinforce, entropy_adv)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup("advantage estimator", ADVANTAGES, v)
        return v


class SurrogateConfig(StrictModel):
    name: str = "dual_clip"  # steer_bench.algos.surrogates: dual_clip (every paper preset) | gspo | cispo | ce_gppo
    params: dict[str, Any] = Field(default_factory=dict)


class LossConfig(StrictModel):
    name: str  # an intervention's name, or "package.module:ClassName"
    clip_low: float | None  # ε_low; None: no lower bound on the ratio
    clip_high: float | None  # ε_high; None: no upper bound
    clip_c: float | None  # dual-clip constant c > 1; None: no dual clip
    agg: Literal["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
    entropy_coef: float  # β of the entropy bonus (loss −= β·agg(H))
    params: dict[str, Any] = Field(default_factory=dict)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)  # the surrogate L the intervention reshapes
    rollout_correction: dict[str, Any] | None = None  # steer_bench.algos.rollout_correction fields; None: off
    adaptive_entropy: dict[str, Any] | None = None  # steer_bench.algos.entropy_control fields; None: fixed β
    entropy_schedule: dict[str, Any] | None = None  # EntropySchedule fields (β by step); None: fixed β
    entropic: dict[str, Any] | None = None  # steer_bench.algos.entropic fields (EntroPIC); None: off

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        intervention_class(v)
        return v


class MethodConfig(StrictModel):
    name: str
    label: str  # display name; the paper's table row where the method is in the paper
    description: str
    ablation: bool = False  # True: our ablation, not in the STEER paper
    advantage: AdvantageConfig
    loss: LossConfig

    @model_validator(mode="after")
    def _resolves(self) -> MethodConfig:
        self.resolve()
        return self

    def resolve(self) -> Method:
        """The library's method object (built and dry-run once per distinct preset)."""
        try:
            return _resolve(self.model_dump_json())
        except (ValueError, TypeError) as e:
            raise ValueError(f"method {self.name!r} does not run: {e}") from e


@functools.lru_cache(maxsize=256)
def _resolve(dumped: str) -> Method:
    m = json.loads(dumped)
    adv, loss = m["advantage"], m["loss"]
    return make_method(
        m["name"],
        estimator=adv["estimator"],
        estimator_params=adv["params"],
        loss=loss["name"],
        loss_params=loss["params"],
        clip_low=loss["clip_low"],
        clip_high=loss["clip_high"],
        clip_c=loss["clip_c"],
        agg=loss["agg"],
        entropy_coef=loss["entropy_coef"],
        surrogate=loss["surrogate"]["name"],
        surrogate_params=loss["surrogate"]["params"],
        rollout_correction=loss["rollout_correction"],
        adaptive_entropy=loss["adaptive_entropy"],
        entropy_schedule=loss["entropy_schedule"],
        entropic=loss["entropic"],
    )


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

"""Method presets: ``configs/methods/<name>.yaml`` validated into a typed :class:`MethodConfig`, resolved once
into the objective library's :class:`~steer_bench.algos.Method` (:meth:`MethodConfig.resolve`).

A method is an advantage estimator plus a policy loss (one intervention of ``steer_bench/algos/interventions/``)
with its surrogate, clip settings, aggregation, entropy bonus and optional rollout correction and controller.
Each section with a name and parameters maps onto one part of the library's registry
(:func:`~steer_bench.algos.build`: names and hyperparameters checked there, once), except the two keys that
became regularisers: ``loss.entropy_coef`` is the entropy bonus, and a controller section also brings the
regulariser it drives (:func:`control`). Every preset is run once on a tiny batch at load time, so a config that
loads can train.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, PrivateAttr, field_validator, model_validator

from steer_bench.algos import Advantage, Controller, Intervention, Method, PolicySurrogate, build, lookup
from steer_bench.algos.method import dry_run
from steer_bench.algos.registry import check_params, hyperparameters, required
from steer_bench.algos.regularisers import Regulariser
from steer_bench.algos.rollout_correction import RolloutCorrection
from steer_bench.config.base import StrictModel, load_model
from steer_bench.errors import SteerBenchError

P = TypeVar("P")

CONFIGS_DIR = Path(__file__).parents[2] / "configs"


class AdvantageConfig(StrictModel):
    estimator: str  # steer_bench.algos.advantages (grpo, rloo, opo, w_reinforce, entropy_adv)
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("estimator")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup("advantage", v)
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
    entropy_coef: float  # β of the entropy bonus (the regulariser entropy_bonus, term −β·agg(H)); 0: none
    params: dict[str, Any] = Field(default_factory=dict)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)  # the surrogate L the intervention reshapes
    rollout_correction: dict[str, Any] | None = None  # steer_bench.algos.rollout_correction fields; None: off
    # the controllers (at most one), each the fields of the registered controller of that name (entropic: and of
    # its regulariser, see control()); None: no controller
    adaptive_entropy: dict[str, Any] | None = None  # steer_bench.algos.entropy_control.AdaptiveEntropy
    entropy_schedule: dict[str, Any] | None = None  # steer_bench.algos.entropy_control.EntropySchedule (β by step)
    entropic: dict[str, Any] | None = None  # steer_bench.algos.entropic.EntroPIC

    @field_validator("name")
    @classmethod
    def _known(cls, v: str) -> str:
        lookup("intervention", v)
        return v


class MethodConfig(StrictModel):
    name: str
    label: str  # display name; the paper's table row where the method is in the paper
    description: str
    ablation: bool = False  # True: our ablation, not in the STEER paper
    advantage: AdvantageConfig
    loss: LossConfig

    _method: Method | None = PrivateAttr(default=None)
    _built_from: dict[str, Any] | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _resolves(self) -> MethodConfig:
        try:
            self._method = build_method(self)
        except (ValueError, TypeError) as e:
            raise ValueError(f"method {self.name!r} does not run: {e}") from e
        self._built_from = self.model_dump()
        return self

    def resolve(self) -> Method:
        """The library's method object, built and dry-run when the preset was validated; rebuilt when the fields
        changed since (``model_copy(update=...)`` skips validation and copies the built object with the rest)."""
        if self._method is None or self._built_from != self.model_dump():
            self._method, self._built_from = build_method(self), self.model_dump()
        return self._method


CONTROLLERS = ("adaptive_entropy", "entropy_schedule", "entropic")  # the LossConfig keys naming a controller


def build_method(m: MethodConfig) -> Method:
    """The preset's sections as the library's parts, run once on a tiny batch."""
    loss = m.loss
    regularisers, controller = control(loss)
    method = Method(
        name=m.name,
        advantage=_part(Advantage, "advantage", m.advantage.estimator, m.advantage.params),
        surrogate=_part(PolicySurrogate, "surrogate", loss.surrogate.name, loss.surrogate.params),
        intervention=_part(Intervention, "intervention", loss.name, loss.params),
        clip_low=loss.clip_low,
        clip_high=loss.clip_high,
        clip_c=loss.clip_c,
        agg=loss.agg,
        rollout_correction=None
        if loss.rollout_correction is None
        else _part(RolloutCorrection, "correction", "rollout_correction", loss.rollout_correction),
        regularisers=regularisers,
        controller=controller,
    )
    dry_run(method)
    return method


def control(loss: LossConfig) -> tuple[tuple[Regulariser, ...], Controller | None]:
    """The regularisers and the controller of ``loss``: the entropy bonus β when β ≠ 0 or a controller sets its
    coefficient (adaptive_entropy, entropy_schedule), and EntroPIC's confident-token term with ``entropic``.

    ``loss.entropic`` feeds two parts: the release configures the PI controller and the term's threshold p_high
    in one block (its config/entropic.yaml), and the preset keeps that shape so that run configs and MLflow params
    stay as they were. Its ``high_prob`` goes to the term, whose coefficient α is the controller's (0 before the
    first step), the rest to the controller; the section is checked as one, so an error names ``entropic``. The
    term comes first, the bonus last (the order in which they are added to the loss)."""
    names = [k for k in CONTROLLERS if getattr(loss, k) is not None]
    if len(names) > 1:
        raise ValueError(f"at most one of {', '.join(CONTROLLERS)}; got {', '.join(names)}")
    regularisers: list[Regulariser] = []
    controller = None
    if names:
        name, params = names[0], dict(getattr(loss, names[0]))
        if name == "entropic":
            ctl, term = lookup("controller", name), lookup("regulariser", "entropic_term")
            own = [k for k in hyperparameters(term) if k != "coef"]
            check_params(f"entropy controller {name!r}", params, [*hyperparameters(ctl), *own], [*required(ctl), *own])
            regularisers.append(
                _part(Regulariser, "regulariser", term.name, {"coef": 0.0} | {k: params.pop(k) for k in own})
            )
        controller = _part(Controller, "controller", name, params)
    if loss.entropy_coef != 0 or (controller is not None and controller.drives == "entropy_bonus"):
        regularisers.append(_part(Regulariser, "regulariser", "entropy_bonus", {"coef": loss.entropy_coef}))
    return tuple(regularisers), controller


def _part(base: type[P], role: str, name: str, params: dict[str, Any]) -> P:
    part = build(role, name, params)
    assert isinstance(part, base)
    return part


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

"""Method presets: every YAML loads into a typed config; unknown names fail with the list of valid ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from steer_bench.algos import ADVANTAGES, INTERVENTIONS, Method
from steer_bench.algos.advantages import Grpo
from steer_bench.algos.interventions.steer import Steer
from steer_bench.algos.registry import hyperparameters
from steer_bench.config.method import CONFIGS_DIR, MethodConfig, list_methods, load_method
from steer_bench.errors import SteerBenchError

PRESETS = {p.stem for p in (CONFIGS_DIR / "methods").glob("*.yaml")}


def test_every_preset_exists_and_loads() -> None:
    assert len(PRESETS) >= 30  # the paper's rows, the 2025–26 methods and our ablations
    assert list_methods() == sorted(PRESETS)
    methods = [load_method(n) for n in sorted(PRESETS)]
    for m in methods:
        assert isinstance(m, MethodConfig)
        assert isinstance(m.resolve(), Method)
    assert {m.name for m in methods} == PRESETS  # each file's name matches its stem
    assert {m.advantage.estimator for m in methods} == set(ADVANTAGES)
    builtin = {n for n, c in INTERVENTIONS.items() if c.__module__.startswith("steer_bench.algos.interventions.")}
    assert {m.loss.name for m in methods} >= builtin


def test_our_ablations_are_labelled_as_such() -> None:
    """A preset is flagged ``ablation`` exactly when its file and description say OUR ABLATION."""
    ablations = {n for n in PRESETS if load_method(n).ablation}
    assert "steer_rank" in ablations
    assert "steer" not in ablations
    for name in PRESETS:
        m, text = load_method(name), (CONFIGS_DIR / "methods" / f"{name}.yaml").read_text()
        said = "OUR ABLATION" in m.description
        assert said == (name in ablations) == ("OUR ABLATION" in text), name
        assert ("ablation" in m.label.lower()) == (name in ablations), name


def test_every_nonzero_number_in_a_preset_cites_a_source() -> None:
    number = re.compile(r"^\s*[a-z_]+:\s*(-?[0-9.]+(e-?[0-9]+)?|quantile:[0-9.]+)\s*(#.*)?$")
    for name in PRESETS:
        lines = (CONFIGS_DIR / "methods" / f"{name}.yaml").read_text().splitlines()
        for i, line in enumerate(lines):
            match = number.match(line)
            if match and float(match.group(1).removeprefix("quantile:")) != 0:
                assert match.group(3) or lines[i - 1].lstrip().startswith("#"), f"{name}.yaml: {line!r}"


def test_steer_preset_matches_the_release() -> None:
    m = load_method("steer")
    assert (m.loss.clip_low, m.loss.clip_high, m.loss.clip_c) == (0.2, 0.28, 10.0)
    assert m.loss.params == {
        "weight_min": 0.8,
        "weight_max": 1.0,
        "mapping": "exp",
        "scope": "micro",
        "omega_floor": 0.02,
        "k_norm": "max",
        "form": "paper",
    }
    assert load_method("steer_linear").loss.params["weight_max"] == 1.2
    assert load_method("steer_first_order").loss.params["form"] == "first_order"
    assert load_method("steer_release_bfc8d2e").loss.params["form"] == "release_bfc8d2e"
    assert load_method("steer_quantile_k").loss.params["k_norm"] == "quantile:0.99"
    steer = load_method("steer").loss.params
    for name, key, value in [("steer_theorem", "form", "theorem"), ("steer_rank", "mapping", "rank")]:
        assert load_method(name).loss.params == {**steer, key: value}  # one knob away from steer.yaml
    assert load_method("rloo_steer").advantage.estimator == "rloo"
    assert load_method("opo_steer").advantage.estimator == "opo"


def test_what_the_trainer_must_provide() -> None:
    grpo, steer, fork, ent_loss, ent_adv, wr = (
        load_method(n) for n in ("grpo", "steer", "fork_tokens", "entropy_loss", "entropy_adv", "w_reinforce")
    )
    assert grpo.resolve().needs.groups
    assert not wr.resolve().needs.groups
    assert not grpo.resolve().needs.entropy
    assert not grpo.resolve().needs.old_entropy
    assert not grpo.resolve().needs.mini_batch_stats
    assert steer.resolve().needs.old_entropy
    assert not steer.resolve().needs.entropy_grad
    assert not steer.resolve().needs.mini_batch_stats
    assert load_method("steer", ["loss.params.scope=mini"]).resolve().needs.mini_batch_stats
    assert fork.resolve().needs.entropy
    assert not fork.resolve().needs.entropy_grad
    assert fork.resolve().needs.mini_batch_stats
    assert ent_loss.resolve().needs.entropy
    assert ent_loss.resolve().needs.entropy_grad
    assert ent_adv.resolve().needs.old_entropy
    assert not ent_adv.resolve().needs.entropy
    m = grpo.resolve()
    assert (m.clip_low, m.clip_high, m.clip_c, m.agg, m.regularisers) == (0.2, 0.2, 10.0, "token-mean", ())
    assert m.advantage == Grpo(norm_by_std=True, eps=1e-6)


def test_the_release_steer_is_the_steer_preset() -> None:
    """The analysis probe's λ for methods without STEER uses :meth:`Steer.release`, not the YAML: keep them equal."""
    assert load_method("steer").resolve().intervention == Steer.release()


def test_overrides_and_paths(tmp_path: Path) -> None:
    m = load_method("grpo", ["loss.clip_low=0.99", "loss.clip_high=5", "advantage.params.norm_by_std=false"])
    assert (m.loss.clip_low, m.loss.clip_high, m.advantage.params["norm_by_std"]) == (0.99, 5, False)
    custom = tmp_path / "methods" / "mine.yaml"
    custom.parent.mkdir()
    custom.write_text((CONFIGS_DIR / "methods" / "rloo.yaml").read_text().replace("name: rloo", "name: mine"))
    assert load_method(custom).name == "mine"
    assert load_method("mine", configs_dir=tmp_path).name == "mine"
    assert list_methods(tmp_path) == ["mine"]


STEER_PARAMS = hyperparameters(Steer)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        # each message names the section, the bad name or key, and every valid one (in any order)
        (["advantage.estimator=gae"], ["advantage.estimator", "unknown advantage estimator 'gae'", *ADVANTAGES]),
        (["loss.name=vanilla"], ["loss.name", "unknown policy loss 'vanilla'", *INTERVENTIONS]),
        (["loss.params.weight_mn=0.8"], ["policy loss 'steer'", "unknown ['weight_mn']", *STEER_PARAMS]),
        (["loss.params={}"], ["policy loss 'steer'", "missing [", *(f"'{p}'" for p in STEER_PARAMS)]),
        (["loss.surrogate.name=ppo2"], ["surrogate 'ppo2'", "dual_clip", "gspo", "cispo", "ce_gppo"]),
        (["loss.surrogate.params.beta=1"], ["surrogate 'dual_clip'", "unknown ['beta']", "(none)"]),
        (["loss.entropic={target: 0.1}"], ["entropy controller 'entropic'", "missing [", "'kp'", "'high_prob'"]),
        (["loss.agg=mean"], ["loss.agg", "token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"]),
        (["loss.params.mapping=expo"], ["method 'steer' does not run", "'expo'", "exp", "linear", "rank"]),
        (["loss.params.scope=macro"], ["scope must be one of", "'macro'", "micro", "mini"]),
        (["loss.clip_c=1.0"], ["clip_c must be > 1"]),
        (["loss.params.weight_min=abc"], ["does not run"]),
        (["lr=1e-6"], ["unknown key 'lr'", "ablation", "advantage", "description", "label", "loss", "name"]),
    ],
)
def test_bad_configs_fail_naming_the_file_and_the_valid_names(overrides: list[str], named: list[str]) -> None:
    with pytest.raises(SteerBenchError) as e:
        load_method("steer", overrides)
    message = str(e.value)
    assert "configs/methods/steer.yaml" in message
    for part in named:
        assert part in message, (part, message)


def test_unknown_method_lists_the_presets() -> None:
    with pytest.raises(
        SteerBenchError, match=r"unknown method 'stear'; valid methods: a_grae, adaptive_entropy, ce_gppo, .*steer,"
    ):
        load_method("stear")
    with pytest.raises(SteerBenchError, match="config file not found"):
        load_method("missing.yaml")


def test_a_copied_preset_resolves_to_its_own_parts() -> None:
    """``model_copy(update=...)`` skips validation and copies the built Method with it: resolve() must rebuild, or
    a preset with a swapped advantage would silently train with the old one."""
    steer = load_method("steer")
    mixed = steer.model_copy(update={"advantage": load_method("w_reinforce").advantage})
    assert steer.resolve().advantage.name == "grpo"
    assert mixed.resolve().advantage.name == "w_reinforce"
    assert mixed.resolve() is mixed.resolve()  # built once per change, not per call

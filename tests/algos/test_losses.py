"""Every registered policy loss: a protocol walk, hand-worked values for clip_cov / kl_cov / fork_tokens /
the entropy bonus, the gradient tests, and the documented metric keys and their reductions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import pytest
import torch

from steer_bench.algos import (
    INTERVENTIONS,
    SHARED_METRICS,
    EntropyBonus,
    Intervention,
    Method,
    TokenBatch,
    Totals,
    build,
    covariance,
    entropy_bonus,
    metric_table,
    reduce_metrics,
)
from steer_bench.algos.advantages import Grpo
from steer_bench.config.method import list_methods, load_method

MakeBatch = Callable[..., dict[str, torch.Tensor]]  # the make_batch fixture (conftest.py)

PPO = {"clip_low": 0.2, "clip_high": 0.28, "clip_c": 10.0, "agg": "token-mean", "entropy_coef": 0.0}  # β: the bonus


def _params_by_loss() -> dict[str, dict]:
    """For each registered loss, the parameters of the first preset that uses it."""
    out: dict[str, dict] = {}
    for name in list_methods():
        m = load_method(name)
        shared = m.loss.model_dump(include={"clip_low", "clip_high", "clip_c", "agg", "entropy_coef"})
        out.setdefault(m.loss.name, shared | m.loss.params)
    return out


def _builtin() -> list[str]:
    """The interventions of steer_bench/algos/interventions/ (tests may register their own elsewhere)."""
    return sorted(n for n, c in INTERVENTIONS.items() if c.__module__.startswith("steer_bench.algos.interventions."))


PARAMS = _params_by_loss()
POLICY_LOSSES = _builtin()
SETTINGS = ("clip_low", "clip_high", "clip_c", "agg", "entropy_coef")


def _method(name: str, params: dict) -> Method:
    """The intervention ``name`` (its parameters: ``params`` less the clip / aggregation / bonus settings)."""
    intervention = build("intervention", name, {k: v for k, v in params.items() if k not in SETTINGS})
    assert isinstance(intervention, Intervention)
    settings = {k: params[k] for k in SETTINGS if k != "entropy_coef"}
    grpo, bonus = Grpo(norm_by_std=True, eps=1e-6), entropy_bonus(params["entropy_coef"])
    return Method(name=name, advantage=grpo, intervention=intervention, regularisers=bonus, **settings)


LENGTHS = [5, 2, 0, 4, 5, 3]


def _run(
    name: str,
    x: dict[str, torch.Tensor],
    params: dict,
    seed: int = 0,
    totals: Totals | None = None,
    stats: object = None,
) -> tuple[torch.Tensor, dict, dict]:
    leaves = {k: x[k].clone().requires_grad_(True) for k in ("logp", "old", "adv", "entropy", "old_entropy")}
    batch = TokenBatch(
        leaves["logp"], leaves["old"], leaves["adv"], x["mask"], leaves["entropy"], leaves["old_entropy"],
        torch.Generator().manual_seed(seed),
    )  # fmt: skip
    loss, metrics = _method(name, params).loss(batch, totals, stats)
    loss.backward()
    return loss, metrics, {k: v.grad for k, v in leaves.items()}


def test_every_registered_loss_has_a_preset() -> None:
    assert set(PARAMS) == set(POLICY_LOSSES)


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
@pytest.mark.parametrize("entropy_coef", [0.0, 0.01])
def test_protocol(name: str, entropy_coef: float, make_batch: MakeBatch) -> None:
    params = PARAMS[name] | {"entropy_coef": entropy_coef}
    x = make_batch(0, LENGTHS, 5)
    loss, metrics, grads = _run(name, x, params)
    assert loss.dim() == 0
    assert torch.isfinite(loss)
    # Gradient only through log-probs and (for the bonus) the current entropy; none into padding.
    assert grads["old"] is None
    assert grads["adv"] is None
    assert grads["old_entropy"] is None
    pad = x["mask"] == 0
    assert torch.equal(grads["logp"][pad], torch.zeros(int(pad.sum())))
    assert (grads["entropy"] is not None) == (entropy_coef != 0)
    # Padding values do not matter.
    junk = {k: torch.where(pad, torch.full_like(v, -7.0), v) if k != "mask" else v for k, v in x.items()}
    loss2, _, grads2 = _run(name, junk, params)
    assert loss2.item() == pytest.approx(loss.item(), abs=1e-6)
    assert torch.allclose(grads2["logp"], grads["logp"], atol=1e-7)
    # Metrics: MLflow-safe keys, finite 0-d values without gradient.
    for key, value in metrics.items():
        assert re.fullmatch(r"[a-z_]+/[a-z0-9_]+", key), key
        value = torch.as_tensor(value)
        assert value.dim() == 0, key
        assert torch.isfinite(value), key
        assert not value.requires_grad, key


@pytest.mark.parametrize("name", sorted(POLICY_LOSSES))
def test_zero_advantage_gives_zero_loss_unless_a_regulariser(name: str, make_batch: MakeBatch) -> None:
    x = make_batch(1, LENGTHS, 5)
    x["adv"] = torch.zeros_like(x["adv"])
    loss, _, grads = _run(name, x, PARAMS[name])
    if name == "kl_cov":  # the |Δ log π| penalty is a regulariser: it stays
        assert loss.item() > 0
    else:
        assert loss.item() == 0.0
        assert torch.equal(grads["logp"], torch.zeros_like(grads["logp"]))
    on_policy = x | {"logp": x["old"]}
    assert _run(name, on_policy, PARAMS[name])[0].item() == 0.0


def test_entropy_bonus_by_hand() -> None:
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    ent = torch.tensor([[0.5, 1.5, 9.0]], requires_grad=True)
    bonus = _method("ppo", PPO | {"entropy_coef": 0.1})
    loss, m = bonus.loss(TokenBatch(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), mask, ent))
    assert loss.item() == pytest.approx(-0.1 * 1.0)  # -β·mean(H) over valid tokens
    assert float(m["loss/entropy_bonus"]) == pytest.approx(0.1)
    loss.backward()
    assert ent.grad[0].tolist() == pytest.approx([-0.05, -0.05, 0.0])
    with pytest.raises(ValueError, match="regulariser 'entropy_bonus' needs"):
        bonus.loss(TokenBatch(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1, 3), mask))


# Four valid tokens (and padding): A - mean A = [1, 1, -1, -1], log π - mean = [1, -1, 1, -1], so Cov = [1, -1, -1, 1].
HAND_MASK = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
HAND_ADV = torch.tensor([[2.0, 2.0, 0.0], [0.0, 0.0, 0.0]])
HAND_LOGP = torch.tensor([[-1.0, -3.0, 0.0], [-1.0, -3.0, 0.0]])


def test_covariance_by_hand() -> None:
    assert covariance(HAND_ADV, HAND_LOGP, HAND_MASK).tolist() == [[1.0, -1.0, 0.0], [-1.0, 1.0, 0.0]]


def test_clip_cov_by_hand() -> None:
    logp = HAND_LOGP.clone().requires_grad_(True)
    params = {"ratio": 0.5, "cov_lb": 0.5, "cov_ub": 5.0}  # floor(0.5·4) = 2 picks: both candidates
    loss, m = _method("clip_cov", PPO | {"clip_c": None} | params).loss(
        TokenBatch(logp, HAND_LOGP, HAND_ADV, HAND_MASK)
    )
    assert loss.item() == pytest.approx(-2.0 / 4)  # token (0, 0) detached: only (0, 1) keeps -A·r = -2
    assert float(m["clip_cov/candidates"]) == 2
    assert float(m["clip_cov/tokens_touched"]) == 2
    loss.backward()
    assert logp.grad.tolist() == [[0.0, -0.5, 0.0], [0.0, 0.0, 0.0]]


def test_clip_cov_picks_at_least_one_and_skips_clipped_tokens(make_batch: MakeBatch) -> None:
    x = make_batch(2, LENGTHS, 5)
    x["logp"] = x["old"] + 0.5 * torch.randn(6, 5, generator=torch.Generator().manual_seed(3))
    params = {"ratio": 1e-6, "cov_lb": -100.0, "cov_ub": 100.0}
    _, m, _ = _run("clip_cov", x, PPO | params)
    assert float(m["clip_cov/tokens_touched"]) == 1
    # Now detach every candidate: exactly the unclipped valid tokens, which must get exactly zero gradient.
    _, m, grads = _run("clip_cov", x, PPO | params | {"ratio": 1.0})
    ratio = (x["logp"] - x["old"]).exp()
    clipped = ((ratio > 1.28) & (x["adv"] > 0)) | ((ratio < 0.8) & (x["adv"] < 0))
    candidates = x["mask"].bool() & ~clipped
    assert float(m["clip_cov/candidates"]) == candidates.sum()
    assert clipped[x["mask"].bool()].any()
    assert torch.equal(grads["logp"], torch.zeros_like(grads["logp"]))  # candidates detached, others clipped
    ppo_grads = _run("ppo", x, PPO)[2]["logp"]
    assert (ppo_grads[candidates & (x["adv"] != 0)] != 0).all()  # ... and they did have a gradient before


def test_clip_cov_random_choice_is_reproducible_with_a_generator(make_batch: MakeBatch) -> None:
    x = make_batch(4, LENGTHS, 5)
    params = PPO | {"ratio": 0.2, "cov_lb": -100.0, "cov_ub": 100.0}
    g1, g2, g3 = (_run("clip_cov", x, params, seed=s)[2]["logp"] for s in (0, 0, 1))
    assert torch.equal(g1, g2)
    assert not torch.equal(g1, g3)
    zeroed = (g1 == 0) & (x["mask"] > 0) & (_run("ppo", x, PPO)[2]["logp"] != 0)
    assert int(zeroed.sum()) == int(0.2 * x["mask"].sum())


def test_kl_cov_by_hand() -> None:
    adv = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    logp = torch.tensor([[-1.0, -2.0], [-1.0, -2.0]])  # Cov = [0.5, -0.5, -0.5, 0.5]: top 2 are (0,0), (1,1)
    params = {"ratio": 0.5, "kl_coef": 1.0}
    clip = PPO | {"clip_low": None, "clip_high": None, "clip_c": None}
    loss, m = _method("kl_cov", clip | params).loss(TokenBatch(logp, logp - 0.1, adv, torch.ones(2, 2)))
    r = math.exp(0.1)
    assert loss.item() == pytest.approx(((-r + 0.1) + (-r) + r + (r + 0.1)) / 4)
    assert float(m["kl_cov/tokens_touched"]) == 2
    assert float(m["kl_cov/abs_kl"]) == pytest.approx(0.1)


def test_kl_cov_is_inert_on_policy(make_batch: MakeBatch) -> None:
    x = make_batch(5, LENGTHS, 5)
    x["logp"] = x["old"].clone()
    clip = PPO | {"clip_low": None, "clip_high": None, "clip_c": None}
    kl_loss, m, kl_grads = _run("kl_cov", x, clip | {"ratio": 0.5, "kl_coef": 1.0})
    ppo_loss, _, ppo_grads = _run("ppo", x, clip)
    assert float(m["kl_cov/tokens_touched"]) > 0
    assert kl_loss.item() == pytest.approx(ppo_loss.item(), abs=1e-7)
    assert torch.equal(kl_grads["logp"], ppo_grads["logp"])


def test_fork_tokens_by_hand_and_zero_gradient_below_the_threshold() -> None:
    ent = torch.tensor([[0.1, 0.5, 0.9, 1.3, 2.0, 5.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 1.0, 0.0]])
    logp = torch.zeros(1, 6, requires_grad=True)
    fork = _method("fork_tokens", PPO | {"top_frac": 0.4, "scope": "micro"})
    loss, m = fork.loss(TokenBatch(logp, torch.zeros(1, 6), torch.ones(1, 6) * mask, mask, ent))
    # 0.6-quantile of [0.1, 0.5, 0.9, 1.3, 2.0]: position 2.4 -> 0.9 + 0.4·0.4 = 1.06; kept: 1.3 and 2.0.
    assert float(m["fork_tokens/threshold"]) == pytest.approx(1.06)
    assert loss.item() == pytest.approx(-2 / 5)  # the masked tokens stay in the denominator
    loss.backward()
    assert logp.grad[0].tolist() == pytest.approx([0.0, 0.0, 0.0, -0.2, -0.2, 0.0])
    assert float(m["fork_tokens/tokens_touched"]) == 3
    assert float(m["fork_tokens/frac_kept"]) == pytest.approx(0.4)


def test_fork_tokens_mini_scope_threshold_is_shared_by_micro_batches(make_batch: MakeBatch) -> None:
    x = make_batch(6, LENGTHS, 5)
    params = PARAMS["fork_tokens"]
    fork = _method("fork_tokens", params)
    stats = fork.mini_batch_stats(TokenBatch(x["logp"], x["old"], x["adv"], x["mask"], x["entropy"]))
    assert stats is not None
    full = _run("fork_tokens", x, params)[0].item()
    totals = Totals(batch_tokens=int(x["mask"].sum()), batch_seqs=int((x["mask"].sum(-1) > 0).sum()))
    split = sum(
        _run("fork_tokens", {k: v[sl] for k, v in x.items()}, params, totals=totals, stats=stats)[0].item()
        for sl in (slice(0, 2), slice(2, 6))
    )
    assert split == pytest.approx(full, abs=1e-6)
    with pytest.raises(ValueError, match="needs the current policy's entropy"):
        fork.loss(TokenBatch(x["logp"], x["old"], x["adv"], x["mask"]))


def test_unknown_loss_and_parameters_list_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown policy loss 'vanilla'; valid: ") as e:
        _method("vanilla", PPO)
    assert all(name in str(e.value) for name in POLICY_LOSSES)
    with pytest.raises(ValueError, match=r"policy loss 'steer': unknown \['lam_min'\] parameter") as e:
        _method("steer", PARAMS["steer"] | {"lam_min": 0.8})
    assert all(key in str(e.value) for key in ("weight_min", "weight_max", "mapping", "scope", "form"))


def test_every_metric_key_is_declared_and_in_the_table_with_its_reduction(make_batch: MakeBatch) -> None:
    """The table (``steer-bench methods --metrics``) is generated from the declarations; every key a loss returns
    is declared (the dry run refuses undeclared ones) and every declared key is returned by some call."""
    table = metric_table()
    seen: set[str] = set()
    declared = dict(SHARED_METRICS) | EntropyBonus.metrics  # the bonus: the runs with entropy_coef 0.01
    for name in POLICY_LOSSES:
        declared |= INTERVENTIONS[name].metrics
        for coef in (0.0, 0.01):
            seen |= set(_run(name, make_batch(8, LENGTHS, 5), PARAMS[name] | {"entropy_coef": coef})[1])
    assert seen == set(declared)
    for key, metric in declared.items():
        assert f"| `{key}` | {metric.reduce} | {metric.meaning} |" in table, key


def test_reduce_metrics_over_micro_batches() -> None:
    calls = [
        {"loss/n_tokens": 2.0, "loss/pg": 0.5, "loss/clipfrac": 0.5, "steer/lambda_min": 0.9, "loss/ratio_max": 1.1},
        {
            "loss/n_tokens": 6.0,
            "loss/pg": torch.tensor(0.25),
            "loss/clipfrac": 0.0,
            "steer/lambda_min": 0.8,
            "loss/ratio_max": 1.3,
        },
    ]
    rules = {k: m.reduce for k, m in (SHARED_METRICS | INTERVENTIONS["steer"].metrics).items()}
    out = reduce_metrics(calls, rules)
    assert out == pytest.approx(
        {"loss/n_tokens": 8.0, "loss/pg": 0.75, "loss/clipfrac": 0.125, "steer/lambda_min": 0.8, "loss/ratio_max": 1.3}
    )

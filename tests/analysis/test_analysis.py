"""Entropy-dynamics analysis: the statistics on hand-worked inputs, the probe on the real tiny model (identical
inputs before/after, positions, formulas, no side effects on training), `steer-bench analyze` end to end on
synthetic probe files and on a real training run, and the report's inclusion of analysis.md."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from tiny import chat_prompt_ids, load_tiny, tiny_model_dir

from steer_bench import cli
from steer_bench.algos import TokenBatch
from steer_bench.algos.interventions.steer import steer_weights
from steer_bench.analysis import EntropyProbe
from steer_bench.analysis.analyze import COLUMNS, analyze
from steer_bench.analysis.stats import (
    QUADRANT_STATS,
    agreement,
    estimator_table,
    prediction,
    quadrant_stats,
    step_metrics,
)
from steer_bench.config import deep_merge, read_yaml, validate
from steer_bench.config.method import load_method
from steer_bench.config.run import TrainConfig
from steer_bench.errors import SteerBenchError
from steer_bench.report import document
from steer_bench.rollout import RolloutBatch, score_responses
from steer_bench.train import forward

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- statistics
def test_agreement_by_hand() -> None:
    # pred = [1, 2, 0, −1], ΔH = [1, 1, 1, −1]. Deviations from the means (0.5, 0.5): [.5, 1.5, −.5, −1.5] and
    # [.5, .5, .5, −1.5]: Σ products 3, Σ squares 5 and 3 -> Pearson 3/√15. Ranks [3, 4, 2, 1] and [3, 3, 3, 1]
    # (ties averaged) have the same deviations -> Spearman 3/√15 too. Signs: the 0 prediction misses -> 3/4.
    # Σ(pred − ΔH)² = 2, ΣΔH² = 4 -> 0.5. LS factor Σ pred·ΔH / Σ pred² = 4/6; residuals at 2/3:
    # [−1/3, 1/3, −1, 1/3] -> Σ² = 4/3 -> rel. MSE 1/3.
    got = agreement(np.array([1.0, 2.0, 0.0, -1.0]), np.array([1.0, 1.0, 1.0, -1.0]))
    expected = {"pearson": 3 / 15**0.5, "spearman": 3 / 15**0.5, "sign": 0.75, "rel_mse": 0.5}
    assert got == pytest.approx(expected | {"ls_factor": 2 / 3, "rel_mse_ls": 1 / 3, "abs_spearman": math.nan},
                                nan_ok=True)  # |ΔH| is constant: no rank correlation  # fmt: skip
    # |pred| = [1, 2, 3] and |ΔH| = [1, 3, 2]: rank differences 0, 1, 1 -> 1 − 6·2/(3·8) = 0.5.
    assert agreement(np.array([1.0, -2.0, 3.0]), np.array([-1.0, 3.0, 2.0]))["abs_spearman"] == pytest.approx(0.5)


def test_agreement_degenerate_inputs_are_nan_not_errors() -> None:
    few = agreement(np.array([1.0, 2.0]), np.array([1.0, 3.0]))
    assert math.isnan(few["pearson"])
    assert math.isnan(few["spearman"])
    assert few["sign"] == 1.0
    assert few["ls_factor"] == pytest.approx(7 / 5)
    zero_pred = agreement(np.zeros(4), np.array([1.0, -1.0, 2.0, 0.0]))
    assert math.isnan(zero_pred["ls_factor"])
    assert zero_pred["sign"] == 0.0
    assert zero_pred["rel_mse"] == 1.0
    zero_dh = agreement(np.array([1.0, 2.0, 3.0]), np.zeros(3))
    assert all(math.isnan(zero_dh[k]) for k in ("pearson", "sign", "rel_mse", "rel_mse_ls"))


def _tokens(**columns) -> pd.DataFrame:
    n = len(columns["delta_h"])
    base = {"method": "m", "seed": 0, "step": 1, "lr": 1.0, "n_tokens": 1, "omega": 0.0, "omega_first_order": 0.0}
    return pd.DataFrame({k: [v] * n for k, v in base.items()} | columns)


def test_prediction_is_minus_eta_over_l_times_the_estimate() -> None:
    t = _tokens(delta_h=[0.0, 0.0], omega=[2.0, -3.0], cov=[1.0, 1.0], lr=[0.1, 0.2], n_tokens=[4, 8])
    assert prediction(t, "paper") == pytest.approx([-0.05, 0.075])
    assert prediction(t, "cov") == pytest.approx([-0.025, -0.025])


def test_quadrant_stats_by_hand() -> None:
    t = _tokens(
        quadrant=["pos_high", "pos_high", "pos_low", "neg_high", "neg_high", "none"],
        delta_h=[-0.3, 0.1, 0.2, 0.4, -0.1, 0.9],
    )
    q = quadrant_stats(t)  # Σ|ΔH| = 2.0 over all six tokens
    assert q["pos_high"] == pytest.approx({"tokens": 2 / 6, "dh_share": -0.1, "dh_mean": -0.1, "as_expected": 0.5})
    assert q["pos_low"] == pytest.approx({"tokens": 1 / 6, "dh_share": 0.1, "dh_mean": 0.2, "as_expected": 1.0})
    assert q["neg_high"] == pytest.approx({"tokens": 2 / 6, "dh_share": 0.15, "dh_mean": 0.15, "as_expected": 0.5})
    assert q["neg_low"]["tokens"] == 0
    assert q["neg_low"]["dh_share"] == 0
    assert math.isnan(q["neg_low"]["dh_mean"])


# ---------------------------------------------------------------------------------------------- the probe
@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


def _cfg(model: Path, **train) -> TrainConfig:
    smoke = read_yaml(REPO / "configs" / "smoke.yaml")["train"]
    base = {"model": {"path": str(model)}, "data": {"train": "unused.parquet"}, "track": False,
            "validation": {"every_n_steps": 0}}  # fmt: skip
    return validate(TrainConfig, deep_merge(deep_merge(smoke, base), train), source="test")


@pytest.fixture(scope="module")
def probe_inputs(tiny_dir: Path):
    """A real tokenizer's prompts, random ragged responses, A ∈ {−1, 0, +1}: (model, batch, old, adv)."""
    model, tok = load_tiny(tiny_dir)
    g = torch.Generator().manual_seed(0)
    prompts = chat_prompt_ids(tok, ["3+4", "12*7", "19-5", "8*8"])
    lengths = [7, 3, 9, 5, 1, 8, 4, 6]
    responses = [torch.randint(0, len(tok), (n,), generator=g).tolist() for n in lengths]
    rb = RolloutBatch(list(range(8)), [prompts[i % 4] for i in range(8)], responses, [True] * 8)
    batch = rb.padded(tok.pad_token_id)
    adv = torch.tensor([1.0, -1.0, 0.0, 1.0, -1.0, 1.0, 0.0, -1.0])[:, None] * batch.response_mask
    model.eval()
    with torch.no_grad():
        old = score_responses(model, batch, temperature=1.0)
    return model, batch, old, adv


def _probe(probe_inputs, cfg: TrainConfig, method: str = "grpo", step: int = 3) -> EntropyProbe:
    _, batch, old, adv = probe_inputs
    return EntropyProbe(step, load_method(method).resolve(), cfg, batch, old, adv, forward=forward)


def test_noop_step_measures_exactly_zero_even_with_dropout(probe_inputs, tiny_dir: Path) -> None:
    model, batch, *_ = probe_inputs
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.5  # active in train mode only
    model.train()
    rows = torch.arange(8)
    with torch.no_grad():
        a, b = (forward(model, batch, rows, 1.0)[1] for _ in range(2))
    assert not torch.equal(a, b), "dropout should make train-mode forwards differ (else this test proves nothing)"
    probe = _probe(probe_inputs, _cfg(tiny_dir, micro_batch_size=4))
    probe.before(model, rows)
    probe.after(model, rows)  # no optimizer step in between
    assert model.training, "the probe must restore train mode"
    tokens = probe.tokens()
    assert len(tokens) == int((probe_inputs[3] != 0).sum()) > 0
    assert (tokens["delta_h"] == 0).all()
    assert (tokens["logp_after"] == tokens["logp"]).all()
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = 0.0
    model.eval()


def test_probe_across_a_real_step(probe_inputs, tiny_dir: Path, tmp_path: Path) -> None:
    model, batch, (old_logp, old_ent), adv = probe_inputs
    model = load_tiny(tiny_dir)[0]  # a fresh copy: this test steps it
    cfg = _cfg(tiny_dir, micro_batch_size=2, analysis={"every_n_steps": 1, "max_tokens": 10})
    rows = torch.tensor([0, 1, 2, 3, 4, 5])  # the "first mini-batch": 6 of the 8 rows
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    model.train()
    logp, _ = forward(model, batch, rows, 1.0)
    mask = batch.response_mask[rows]
    loss, _ = load_method("grpo").resolve().loss(TokenBatch(logp, old_logp[rows], adv[rows], mask))  # ppo, ε 0.2, c 10
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    probe = _probe(probe_inputs, cfg, method="steer")
    probe.before(model, rows)
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads, strict=True))
    assert torch.equal(torch.get_rng_state(), rng), "the probe must not consume the trainer's random stream"
    opt.step()
    probe.after(model, rows)
    assert model.training

    t = probe.tokens()
    # Exactly the tokens of the probed rows with A ≠ 0, at the right (row, position).
    keep = (mask > 0) & (adv[rows] != 0)
    assert sorted(zip(t["row"], t["pos"], strict=True)) == [tuple(x) for x in keep.nonzero().tolist()]
    assert (t["n_tokens"] == int(mask.sum())).all()
    assert (t["lr"] == cfg.optim.lr).all()
    # Measured ΔH equals an independent whole-batch recomputation before/after, at those positions.
    model.eval()
    with torch.no_grad():
        _, ent_after = score_responses(model, batch, temperature=1.0)
    r, p = torch.tensor(t["row"].to_numpy()), torch.tensor(t["pos"].to_numpy())
    assert t["entropy"].to_numpy() == pytest.approx(old_ent[r, p].numpy(), abs=1e-5)  # on-policy: π = π_old
    assert t["delta_h"].to_numpy() == pytest.approx((ent_after - old_ent)[r, p].numpy(), abs=1e-5)
    assert (t["delta_h"].abs() > 0).all()
    # Ω from the formula, written out in numpy; quadrants from the signs.
    prob, old_prob = np.exp(t["logp"]).clip(1e-8, 1 - 1e-8), np.exp(t["old_logp"]).clip(1e-8, 1)
    om = t["adv"] / old_prob * prob * (1 - prob) * (np.log(prob) + t["old_entropy"])
    assert t["omega"].to_numpy() == pytest.approx(om.to_numpy(), rel=1e-4, abs=1e-9)
    assert t["omega_first_order"].to_numpy() == pytest.approx((prob * om).to_numpy(), rel=1e-4, abs=1e-9)
    high = t["logp"] + t["old_entropy"] > 0
    expected = np.where(t["adv"] > 0, np.where(high, "pos_high", "pos_low"), np.where(high, "neg_high", "neg_low"))
    assert (t["quadrant"] == expected).all()
    # STEER's λ as the loss applies it: per micro-batch of 2 rows, the method's λ_min.
    release = {
        "weight_min": 0.8,
        "weight_max": 1.0,
        "mapping": "exp",
        "omega_floor": 0.02,
        "k_norm": "max",
        "form": "paper",
    }  # configs/methods/steer.yaml
    lam = torch.cat([steer_weights(adv[m], old_logp[m], old_logp[m], old_ent[m], batch.response_mask[m], **release)
                     for m in rows.split(2)])  # fmt: skip
    assert t["lam"].to_numpy() == pytest.approx(lam[r, p].numpy(), abs=1e-6)
    assert (t["lam"] >= 0.8 - 1e-6).all()
    assert (t["lambda_source"] == "method").all()

    metrics = probe.save(tmp_path / "analysis" / "step_000003.parquet")
    saved = pd.read_parquet(tmp_path / "analysis" / "step_000003.parquet")
    assert len(saved) == 10 < len(t)
    assert list(saved.columns) == list(COLUMNS)
    assert saved.merge(t, on=list(COLUMNS)).shape[0] == 10  # a sample of the full table, values unchanged
    assert metrics["analysis/tokens_adv"] == len(t)
    assert metrics["analysis/seconds"] > 0
    assert metrics["analysis/paper/pearson"] == pytest.approx(step_metrics(t)["analysis/paper/pearson"])
    assert all(re.fullmatch(r"[A-Za-z0-9_/]+", k) for k in metrics)


def test_probe_call_order_is_checked(probe_inputs, tiny_dir: Path) -> None:
    model = probe_inputs[0]
    probe = _probe(probe_inputs, _cfg(tiny_dir))
    with pytest.raises(RuntimeError, match="before"):
        probe.after(model, torch.arange(4))
    probe.before(model, torch.arange(4))
    with pytest.raises(RuntimeError, match="other rows"):
        probe.after(model, torch.arange(1, 5))
    assert _probe(probe_inputs, _cfg(tiny_dir), method="grpo").method.intervention.name == "ppo"


# ---------------------------------------------------------------------------------------------- analyze
def _synthetic_run(run: Path, method: str, label: str, seed: int, rng: np.random.Generator) -> pd.DataFrame:
    """Probe files of two steps in which ΔH = −(η/L)·p·Ω exactly (the first-order form is exact)."""
    frames = []
    for step, n_tokens in ((2, 50), (4, 80)):
        n = 40
        logp = np.log(rng.uniform(0.05, 0.95, n))
        ent = rng.uniform(0.1, 2.0, n)
        adv = rng.choice([-1.0, 1.0], n)
        om = adv / np.exp(logp) * np.exp(logp) * (1 - np.exp(logp)) * (logp + ent)
        frame = pd.DataFrame({
            "method": method, "seed": seed, "step": step, "row": np.arange(n) // 8, "pos": np.arange(n) % 8,
            "adv": adv, "old_logp": logp, "logp": logp, "logp_after": logp, "old_entropy": ent, "entropy": ent,
            "omega": om, "omega_first_order": np.exp(logp) * om, "cov": rng.normal(size=n), "lam": 1.0,
            "quadrant": np.where(adv > 0, np.where(logp + ent > 0, "pos_high", "pos_low"),
                                 np.where(logp + ent > 0, "neg_high", "neg_low")),
            "lr": 0.01, "n_tokens": n_tokens, "lambda_source": "method",
        })  # fmt: skip
        frame["delta_h"] = -0.01 / n_tokens * frame["omega_first_order"]
        frame["entropy_after"] = frame["entropy"] + frame["delta_h"]
        (run / "analysis").mkdir(parents=True, exist_ok=True)
        frame[list(COLUMNS)].to_parquet(run / "analysis" / f"step_{step:06d}.parquet")
        frames.append(frame)
    (run / "method.yaml").write_text(yaml.safe_dump({"name": method, "label": label}))
    return pd.concat(frames, ignore_index=True)


@pytest.mark.slow
def test_analyze_tables_figures_and_report_section(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    runs = tmp_path / "results" / "exp" / "runs"
    truth = [
        _synthetic_run(runs / "grpo" / "seed0", "grpo", "GRPO", 0, rng),
        _synthetic_run(runs / "grpo" / "seed1", "grpo", "GRPO", 1, rng),
        _synthetic_run(runs / "steer" / "seed0", "steer", "STEER", 0, rng),
    ]
    empty = runs / "clip_higher" / "seed0"
    empty.mkdir(parents=True)
    out = tmp_path / "results" / "exp" / "analysis"
    dirs = [runs / "grpo" / "seed0", runs / "grpo" / "seed1", runs / "steer" / "seed0", empty]
    assert cli.main(["analyze", "--runs", *map(str, dirs), "--out", str(out)]) == 0

    est = pd.read_csv(out / "estimators.csv")
    first = est[est["estimator"] == "first_order"].set_index("method")
    assert first.loc["grpo", "tokens"] == 160
    assert first.loc["grpo", "steps"] == 4
    assert first["pearson"].tolist() == pytest.approx([1.0, 1.0])
    assert first["ls_factor"].tolist() == pytest.approx([1.0, 1.0])
    assert first["rel_mse"].max() < 1e-12
    assert first.loc["grpo", "eta_over_l"] == pytest.approx((0.01 / 50 + 0.01 / 80) / 2)
    grpo = pd.concat(truth[:2], ignore_index=True)
    paper = est[(est["estimator"] == "paper") & (est["method"] == "grpo")].iloc[0]
    independent = np.corrcoef(-0.01 / grpo["n_tokens"] * grpo["omega"], grpo["delta_h"])[0, 1]
    assert paper["pearson"] == pytest.approx(independent)
    assert paper["label"] == "GRPO"
    assert estimator_table(grpo).set_index("estimator").loc["cov", "pearson"] == pytest.approx(
        est[(est["estimator"] == "cov") & (est["method"] == "grpo")]["pearson"].iloc[0]
    )

    quad = pd.read_csv(out / "quadrants.csv")
    overall = quad[quad["step"].isna()]
    assert overall.groupby("method")["tokens"].sum().tolist() == pytest.approx([1.0, 1.0])
    counts = grpo["quadrant"].value_counts(normalize=True)
    got = overall[overall["method"] == "grpo"].set_index("quadrant")["tokens"]
    assert got.to_dict() == pytest.approx(counts.reindex(got.index, fill_value=0).to_dict())
    assert sorted(quad["step"].dropna().unique()) == [2, 4]

    for name in ("scatter", "quadrants", "lambda"):
        assert (out / "figures" / f"{name}.png").stat().st_size > 1000
    md = (out / "analysis.md").read_text()
    assert "no analysis files" in md
    assert str(empty) in md
    assert "| GRPO |" in md
    assert "steer-bench analyze" in md
    # The report includes the section with links re-pointed from results/exp/report/.
    report_dir = tmp_path / "results" / "exp" / "report"
    section = "\n".join(document.included_section("Entropy-dynamics analysis", out / "analysis.md", report_dir))
    links = re.findall(r"\]\(([^)]+)\)", section)
    assert len(links) == 5
    assert all((report_dir / link).resolve().is_file() for link in links)


def test_analyze_errors_name_the_culprit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    assert cli.main(["analyze", "--runs", str(run), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "no analysis files" in err
    assert str(run) in err
    assert cli.main(["analyze", "--runs", str(run)]) == 2
    assert "--out is required" in capsys.readouterr().err
    (run / "analysis").mkdir()
    bad = run / "analysis" / "step_000001.parquet"
    bad.write_text("not parquet")
    assert cli.main(["analyze", "--runs", str(run), "--out", str(tmp_path / "out")]) == 2
    assert str(bad) in capsys.readouterr().err
    pd.DataFrame({"method": ["grpo"]}).to_parquet(bad)
    with pytest.raises(SteerBenchError, match=r"step_000001.parquet: not a probe file: missing column"):
        analyze([run], tmp_path / "out", command="test")
    assert not (tmp_path / "out").exists()


def test_analyze_without_a_token_writes_the_reason(tmp_path: Path) -> None:
    """Every analysed step's groups had equal rewards (a CPU's rounding can give a smoke run exactly that): not an
    error — the section says so and why, the tables are header-only, and the report includes it."""
    runs = [tmp_path / "results" / "exp" / "runs" / m / "seed0" for m in ("grpo", "steer")]
    for run in runs:
        (run / "analysis").mkdir(parents=True)
        for step in (2, 4):
            pd.DataFrame({c: [] for c in COLUMNS}).to_parquet(run / "analysis" / f"step_{step:06d}.parquet")
    out = tmp_path / "results" / "exp" / "analysis"
    assert cli.main(["analyze", "--runs", *map(str, runs), "--out", str(out)]) == 0
    md = (out / "analysis.md").read_text()
    assert "Nothing to analyse" in md
    assert "equal rewards" in md
    assert all(f"`{run}`: 2 analysed step(s), no token with A ≠ 0" in md for run in runs)
    assert pd.read_csv(out / "estimators.csv").empty
    assert list(pd.read_csv(out / "quadrants.csv").columns) == ["method", "step", "quadrant", "n", *QUADRANT_STATS]
    assert not (out / "figures").exists()
    section = document.included_section("Entropy-dynamics analysis", out / "analysis.md", tmp_path / "report")
    assert any("Nothing to analyse" in line for line in section)


# ---------------------------------------------------------------------------------------------- the trainer
@pytest.mark.slow
def test_training_writes_probe_files_that_analyze_reads(tiny_dir: Path, tmp_path: Path) -> None:
    from steer_bench.data.prepare import prepare_dataset
    from steer_bench.train import train

    data = tmp_path / "synth_train.parquet"
    prepare_dataset("synth_train", data, limit=40, levels=[1], check_golds=False)
    train_section = {"data": {"train": str(data)}, "steps": 2, "prompts_per_step": 4, "mini_batch_prompts": 2,
                     "reward": {"workers": 1}, "log_rollouts_every": 0, "analysis": {"every_n_steps": 2}}  # fmt: skip
    cfg = _cfg(tiny_dir, **train_section)
    run = tmp_path / "runs" / "w_reinforce" / "seed0"
    train(cfg, load_method("w_reinforce"), run)  # A ≠ 0 on every token, whatever the rewards

    assert [p.name for p in (run / "analysis").iterdir()] == ["step_000002.parquet"]
    lines = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert not any(k.startswith("analysis/") for k in lines[0])
    assert lines[1]["analysis/tokens_adv"] > 0
    assert "analysis/first_order/pearson" in lines[1]  # the trainer drops NaN metrics: this one was finite
    saved = pd.read_parquet(run / "analysis" / "step_000002.parquet")
    assert len(saved) == min(cfg.analysis.max_tokens, lines[1]["analysis/tokens_adv"])
    assert (saved["adv"] != 0).all()
    assert (saved["method"] == "w_reinforce").all()
    assert (saved["delta_h"] != 0).mean() > 0.9  # one real optimizer step moved (nearly) every token's entropy
    assert (saved["lambda_source"] == "release defaults").all()

    out = tmp_path / "analysis"
    assert cli.main(["analyze", "--runs", str(run), "--out", str(out)]) == 0
    est = pd.read_csv(out / "estimators.csv")
    assert est["tokens"].tolist() == [len(saved)] * 3
    assert est["label"].iloc[0] == "W-REINFORCE"

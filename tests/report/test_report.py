"""`steer-bench report` end to end on a real sqlite MLflow store and matching run files.

The store holds eval runs for base + grpo/steer (2 seeds) + clip_higher (seed 0 only; kl_cov never evaluated),
train runs with curves, and runs that must not count (an older duplicate; newer runs of another checkpoint, a
failed re-run, a method not in the experiment). Expected numbers are worked out by hand in ``EXPECTED``.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path

import pytest
import yaml

from steer_bench import cli
from steer_bench.config import validate
from steer_bench.experiment import ExperimentConfig
from steer_bench.files import write_json, write_jsonl
from steer_bench.report import build_report, collect, document, figures, power, reference, tables
from steer_bench.tracking import Tracker

BENCHES = ["math500", "aime24", "synth_test"]  # deliberately not in the paper's order
# (row, seed) -> accuracy per benchmark, in BENCHES order.
ACC = {
    ("base", None): [0.30, 0.10, 0.20],
    ("grpo", 0): [0.60, 0.25, 0.50],
    ("grpo", 1): [0.70, 0.35, 0.40],
    ("steer", 0): [0.80, 0.40, 0.55],
    ("steer", 1): [0.84, 0.30, 0.45],
    ("clip_higher", 0): [0.50, 0.20, 0.60],
}
# Hand-computed main-table cells (%); std = |a − b| / √2 for two seeds.
EXPECTED = {
    "Base": ["10.0", "30.0", "20.0", "20.0"],
    "GRPO": ["30.0 ± 7.1", "65.0 ± 7.1", "45.0 ± 7.1", "46.7 ± 2.4"],  # avg per seed 45.0, 48.33
    "STEER": ["**35.0 ± 7.1**", "**82.0 ± 2.8**", "50.0 ± 7.1", "**55.7 ± 3.8**"],  # avg 58.33, 53.0
    "Clip-Higher": ["20.0†", "50.0†", "**60.0**†", "43.3†"],
    "KL-Cov": ["—", "—", "—", "—"],
}
# (method, seed) -> probe-set entropy (all tokens, fork tokens) at steps 0 and 4
PROBE = {
    ("grpo", 0): {0: (0.40, 0.70), 4: (0.20, 0.10)},
    ("grpo", 1): {0: (0.40, 0.70), 4: (0.21, 0.12)},
    ("steer", 0): {0: (0.40, 0.70), 4: (0.30, 0.40)},
    ("steer", 1): {0: (0.40, 0.70), 4: (0.28, 0.36)},
}
CURVES = {  # (method, seed) -> entropy at steps 1..4; steer also logs λ statistics
    ("grpo", 0): [0.50, 0.45, 0.40, 0.35],
    ("grpo", 1): [0.52, 0.47, 0.43, 0.36],
    ("steer", 0): [0.50, 0.49, 0.48, 0.47],
    ("steer", 1): [0.51, 0.50, 0.49, 0.49],
    ("clip_higher", 0): [0.50, 0.46, 0.42, 0.40],
    ("kl_cov", 0): [0.50, 0.44, 0.41, 0.38],
}


def _pass(a: float) -> dict[int, float]:
    """pass@1 and pass@2 of an evaluation with accuracy a (as if each problem were right with probability a)."""
    return {1: a, 2: 1 - (1 - a) ** 2}


def _se(a: float) -> float:
    """The standard error of a greedy accuracy a over 10 problems: s/√10 with s² = 10·a(1−a)/9 (0/1 values)."""
    return math.sqrt(a * (1 - a) / 9)


def _eval_run(
    uri: str, exp: ExperimentConfig, row: str, seed: int | None, accs: list[float], status: str = "FINISHED", **tags
) -> None:
    trained = seed is not None
    tags = {"kind": "eval", "row": row, "method": row if trained else "", "seed": "" if seed is None else seed,
            "model": "tiny/model", "protocol": "greedy", "checkpoint": "best" if trained else ""} | tags  # fmt: skip
    tracker = Tracker(exp.name, tags=tags, uri=uri)
    metrics = {f"eval/{b}/acc": a for b, a in zip(BENCHES, accs, strict=True)}
    metrics |= {f"eval/{b}/acc_se": _se(a) for b, a in zip(BENCHES, accs, strict=True)}
    metrics |= {f"eval/{b}/pass_at_{k}": v for b, a in zip(BENCHES, accs, strict=True) for k, v in _pass(a).items()}
    tracker.log_metrics(metrics, 0)
    tracker.finish(status)
    time.sleep(0.002)  # distinct start times: "newest" is well defined


def _write_summaries(exp: ExperimentConfig, row: str, seed: int | None, accs: list[float]) -> None:
    for b, a in zip(BENCHES, accs, strict=True):
        summary = {"benchmark": b, "row": row, "method": row if seed is not None else "", "seed": seed,
                   "model": "tiny/model", "protocol": {"name": "greedy", "temperature": 0.0}, "engine": "hf",
                   "versions": {"torch": "2.13.0"}, "k": 2, "n_problems": 10,
                   "metrics": {"acc": a, "acc_se": _se(a), **{f"pass_at_{k}": v for k, v in _pass(a).items()}},
                   "complete": True}  # fmt: skip
        write_json(exp.eval_dir(row, seed) / b / "summary.json", summary)


def _train_run(uri: str, exp: ExperimentConfig, method: str, seed: int, entropy: list[float]) -> None:
    """Log steps 1..4 to MLflow and metrics.jsonl; step 3 is logged twice (a resume): the second value counts."""
    lines = []
    for step, h in enumerate(entropy, start=1):
        line = {"step": step, "rollout/entropy_mean": h, "rollout/response_len_mean": 20.0 + step,
                "loss/clipfrac_high": 0.01 * step, "loss/clipfrac_low": 0.02,
                "rollout/entropy_adv_pos": math.nan}  # non-finite: skipped by tracker and file reader  # fmt: skip
        if step % 2 == 0:
            line["val/avg_at_k"] = 0.1 * step + 0.01 * seed
        if method == "steer":
            line |= {"steer/lambda_mean": 0.99, "steer/lambda_min": 0.8, "steer/frac_lambda_below_099": 0.05}
        if step in PROBE.get((method, seed), {}):
            line |= dict(zip(("probe/entropy", "probe/entropy_fork"), PROBE[(method, seed)][step], strict=True))
        lines.append(line)
    if 0 in PROBE.get((method, seed), {}):  # the starting policy's probe: a line for step 0
        lines.insert(
            0,
            {"step": 0, **dict(zip(("probe/entropy", "probe/entropy_fork"), PROBE[(method, seed)][0], strict=False))},
        )
    third = next(i for i, line in enumerate(lines) if line["step"] == 3)
    stale = {**lines[third], "rollout/entropy_mean": 9.0}
    lines = [*lines[:third], stale, *lines[third:]]
    run_dir = exp.run_dir(method, seed)
    write_jsonl(run_dir / "metrics.jsonl", lines)
    write_json(run_dir / "env.json", {"torch": "2.13.0", "git_commit": "abc"})
    tracker = Tracker(exp.name, tags={"kind": "train", "method": method, "seed": seed, "run_dir": run_dir}, uri=uri)
    tracker.log_params({"env": {"torch": "2.13.0", "git_commit": "abc"}})
    for line in lines:
        tracker.log_metrics({k: v for k, v in line.items() if k != "step"}, step=line["step"])
        time.sleep(0.002)  # the re-logged step gets a later timestamp
    tracker.finish()


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[ExperimentConfig, str, Path]:
    """One store and results tree for the module (module-scoped, so its own sqlite URI, like ``mlflow_uri``)."""
    tmp = tmp_path_factory.mktemp("report")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    data = {
        "name": "rep", "results_dir": str(tmp / "results"), "model_path": "tiny/model", "reference": "table3_7b",
        "data": {"train": "synth_train", "benchmarks": BENCHES},
        "methods": ["grpo", "steer", "clip_higher", "kl_cov"], "seeds": [0, 1],
        "eval_only": [{"name": "base", "model": "tiny/model"}], "eval": {"protocol": "greedy", "engine": "hf"},
        "train": {"rollout": {"n": 4, "max_new_tokens": 16}, "optim": {"lr": 3e-5}, "steps": 4,
                  "prompts_per_step": 8, "mini_batch_prompts": 4, "micro_batch_size": 8, "max_prompt_len": 32},
    }  # fmt: skip
    config = tmp / "rep.yaml"
    config.write_text(yaml.safe_dump(data))
    exp = validate(ExperimentConfig, data, source=str(config))
    _eval_run(uri, exp, "steer", 0, [0.1, 0.1, 0.1])  # older duplicate: the newer run below wins
    for (row, seed), accs in ACC.items():
        _eval_run(uri, exp, row, seed, accs)
        _write_summaries(exp, row, seed, accs)
    # Newer runs that must not count: another checkpoint, a failed re-run, a method not in the experiment.
    _eval_run(uri, exp, "grpo", 0, [0.99, 0.99, 0.99], checkpoint="last")
    _eval_run(uri, exp, "grpo", 1, [0.98, 0.98, 0.98], status="FAILED")
    _eval_run(uri, exp, "opo", 0, [0.99, 0.99, 0.99])
    unfinished = {"metrics": {"acc": 0.9}, "complete": False}  # an interrupted evaluation counts as missing
    write_json(exp.eval_dir("clip_higher", 1) / "aime24" / "summary.json", unfinished)
    for (method, seed), entropy in CURVES.items():
        _train_run(uri, exp, method, seed, entropy)
    (exp.root / "tree").mkdir(parents=True)
    (exp.root / "tree" / "tree.md").write_text("Tree result: collapse.\n\n![curve](figures/tree.png)\n")
    return exp, uri, config


@pytest.fixture(scope="module")
def report(setup: tuple[ExperimentConfig, str, Path]):
    exp, uri, _ = setup
    return build_report(exp, uri=uri)


def _md_rows(path: Path) -> dict[str, list[str]]:
    lines = [ln for ln in path.read_text().splitlines() if ln.startswith("| ")][1:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


@pytest.mark.slow  # the `setup` fixture fills a real MLflow store: about 10 s even at load 1-2
def test_main_table_markdown_matches_hand_computed(report) -> None:
    md = report.out_dir / "main_table.md"
    assert md.read_text().splitlines()[0] == "| Method | AIME24 | MATH500 | Synthetic | Avg |"
    rows = _md_rows(md)
    assert list(rows) == ["Base", "GRPO", "STEER", "Clip-Higher", "KL-Cov"]  # eval-only first, then config order
    assert rows == EXPECTED


@pytest.mark.slow
def test_main_table_csv_and_latex(report) -> None:
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO((report.out_dir / "main_table.csv").read_text()))}
    grpo = rows["grpo"]
    assert float(grpo["aime24_mean_pct"]) == pytest.approx(30.0)
    assert float(grpo["aime24_std_pct"]) == pytest.approx(10 / math.sqrt(2))
    assert float(grpo["avg_mean_pct"]) == pytest.approx((45 + 145 / 3) / 2)
    assert (grpo["aime24_n_seeds"], rows["clip_higher"]["aime24_n_seeds"], rows["kl_cov"]["aime24_n_seeds"]) == (
        "2", "1", "0")  # fmt: skip
    assert rows["kl_cov"]["aime24_mean_pct"] == ""
    assert rows["base"]["aime24_std_pct"] == ""
    assert rows["base"]["kind"] == "eval_only"
    assert rows["steer"]["kind"] == "method"
    tex = (report.out_dir / "main_table.tex").read_text()
    assert r"\caption{rep: accuracy (\%), mean $\pm$ std over seeds; best in bold.}" in tex
    assert r"STEER & \textbf{35.0 $\pm$ 7.1} & \textbf{82.0 $\pm$ 2.8} & 50.0 $\pm$ 7.1" in tex
    assert r"Clip-Higher & 20.0$^\dagger$" in tex
    assert r"KL-Cov & -- & -- & -- & -- \\" in tex


@pytest.mark.slow
def test_seed_spread_and_standard_errors(report) -> None:
    """min–max over seeds and one evaluation's SE (root-mean-square over seeds; Avg: √(Σ se²)/B per seed)."""
    rows = {r["row"]: r for r in csv.DictReader(io.StringIO((report.out_dir / "main_table.csv").read_text()))}
    grpo = rows["grpo"]
    assert (float(grpo["aime24_min_pct"]), float(grpo["aime24_max_pct"])) == pytest.approx((25.0, 35.0))
    assert float(grpo["aime24_se_pct"]) == pytest.approx(100 * math.sqrt((_se(0.25) ** 2 + _se(0.35) ** 2) / 2))
    avg_se = [math.sqrt(sum(_se(a) ** 2 for a in ACC[("grpo", s)])) / 3 for s in (0, 1)]
    assert float(grpo["avg_se_pct"]) == pytest.approx(100 * math.sqrt((avg_se[0] ** 2 + avg_se[1] ** 2) / 2))
    assert float(rows["base"]["aime24_se_pct"]) == pytest.approx(100 * _se(0.10))  # one "seed": its own SE
    assert rows["kl_cov"]["aime24_se_pct"] == ""
    spread = _md_rows_after(report.out_dir / "report.md", "### Seed spread and evaluation error")
    se = 100 * math.sqrt((_se(0.25) ** 2 + _se(0.35) ** 2) / 2)
    assert spread["GRPO"][:2] == ["2/2", f"25.0–35.0 (SE {se:.1f})"]
    assert spread["Base"][:2] == ["1/1", f"10.0 (SE {100 * _se(0.10):.1f})"]
    assert spread["KL-Cov"] == ["0/2", "—", "—", "—", "—"]


def _md_rows_after(path: Path, heading: str) -> dict[str, list[str]]:
    """The first Markdown table after ``heading``: {first cell: other cells}."""
    text = path.read_text().split(heading, 1)[1].lstrip().split("\n\n", 1)[0]
    lines = [ln for ln in text.splitlines() if ln.startswith("| ")][1:]
    return {cells[0]: cells[1:] for cells in ([c.strip() for c in ln.strip("|").split("|")] for ln in lines)}


@pytest.mark.slow
def test_vs_paper(report) -> None:
    lines = (report.out_dir / "vs_paper.md").read_text().splitlines()
    i = lines.index(next(ln for ln in lines if ln.startswith("| STEER |")))
    cells = [[c.strip() for c in ln.strip("|").split("|")][1:] for ln in lines[i : i + 3]]
    assert cells[0] == ["ours", "35.0 ± 7.1", "82.0 ± 2.8", "50.0 ± 7.1", "55.7 ± 3.8"]
    # AIME24 36.2 and MATH500 82.2 (Table 3); no paper Synthetic; Avg not comparable over other benchmarks.
    assert cells[1] == ["paper (table3_7b)", "36.2", "82.2", "—", "—"]
    assert cells[2] == ["Δ", "-1.2", "-0.2", "—", "—"]
    rows = list(csv.DictReader(io.StringIO((report.out_dir / "vs_paper.csv").read_text())))
    by = {(r["row"], r["benchmark"]): r for r in rows}
    assert float(by[("grpo", "math500")]["delta_pct"]) == pytest.approx(65.0 - 78.6)
    assert float(by[("base", "aime24")]["paper_pct"]) == 13.8
    assert by[("clip_higher", "aime24")]["paper_pct"] == ""  # the paper lists Clip-Higher without numbers we have
    assert by[("kl_cov", "aime24")]["paper_pct"] == "32.8"
    assert by[("kl_cov", "aime24")]["delta_pct"] == ""


@pytest.mark.slow
def test_figures_written(report) -> None:
    assert set(report.figures) == {"entropy", "probe_entropy", "val_accuracy", "response_length", "clip_fractions",
                                   "steer_lambda", "pass_at_k"}  # fmt: skip
    for rel in report.figures.values():
        png = (report.out_dir / rel).read_bytes()
        assert png.startswith(b"\x89PNG")
        assert len(png) > 5_000


@pytest.mark.slow
def test_report_md(report) -> None:
    text = (report.out_dir / "report.md").read_text()
    for needle in ("# steer-bench report: rep", "| Method | AIME24 | MATH500 | Synthetic | Avg |",
                   "![Rollout entropy](figures/entropy.png)", "## Ours vs the paper (`table3_7b`)",
                   '`{"name": "greedy", "temperature": 0.0}`', "| torch | 2.13.0 | 2.13.0 |",
                   "Tree result: collapse.", "](../tree/figures/tree.png)"):  # fmt: skip
        assert needle in text, needle
    missing = text.split("## Missing")[1].split("##")[0]
    assert "- evaluation of `clip_higher` seed 1: all benchmarks (no evaluation)" in missing
    assert "- evaluation of `kl_cov` seed 0: all benchmarks" in missing
    assert "- training run `clip_higher` seed 1" in missing
    assert "- training run `kl_cov` seed 1" in missing
    assert "`grpo` seed" not in missing
    assert "`base`" not in missing
    assert "| GRPO | 2 | 4 | 0.5100 → 0.3550 | 0.405 |" in text  # means over seeds; val (0.40 + 0.41) / 2 at step 4


@pytest.mark.slow
def test_mlflow_and_files_agree(report, setup) -> None:
    exp, _, _ = setup
    files = collect.from_files(exp)
    mlflow = report.results
    assert mlflow.acc == files.acc
    assert len(mlflow.acc) == 3 * len(ACC)
    assert mlflow.acc[("steer", 0, "aime24")] == 0.40  # the newer duplicate, not the stale 0.1
    assert mlflow.curves == files.curves
    assert mlflow.curves[("grpo", 0)]["rollout/entropy_mean"] == [(1, 0.50), (2, 0.45), (3, 0.40), (4, 0.35)]
    assert mlflow.curves[("grpo", 1)]["val/avg_at_k"] == [(2, pytest.approx(0.21)), (4, pytest.approx(0.41))]
    assert "steer/lambda_mean" in mlflow.curves[("steer", 0)]
    assert "steer/lambda_mean" not in mlflow.curves[("grpo", 0)]
    assert mlflow.curves[("grpo", 1)]["probe/entropy_fork"] == [(0, 0.70), (4, 0.12)]
    assert mlflow.pass_at == files.pass_at
    assert mlflow.pass_at[("grpo", 0, "math500")] == {1: 0.60, 2: pytest.approx(0.84)}


@pytest.mark.slow
def test_comparisons(report) -> None:
    """The sections of steer_bench.report.comparisons, against numbers worked out by hand."""
    text = (report.out_dir / "report.md").read_text().split("## Comparisons")[1].split("\n## ")[0]
    # Against base (Avg 20.0): GRPO seed 0 has Avg 45.0; SE = √(SE_grpo² + SE_base²), each SE over benchmarks
    # √(Σ se_b²)/3 with se(a)² = a(1−a)/9: √(0.075278)/3 = 0.091456 and √(0.051111)/3 = 0.075359 -> 0.118504.
    assert "| GRPO | +25.0 (SE 11.9, z 2.1) |" in text
    # Paired: STEER − GRPO Avg = 58.33 − 45.0 and 53.0 − 48.33 -> 13.33, 4.67: mean 9.0, SE |13.33 − 4.67|/2 = 4.33;
    # t = 2.077 on 1 df (Cauchy): p = 1 − (2/π)·atan(t) = 0.286; CI ± t_{0.975,1} SE = ± 12.706 · 4.333 = ± 55.06.
    t = 9.0 / (26 / 6)
    p = 1 - 2 / math.pi * math.atan(t)
    paired = text.split("### Paired against `grpo`")[1].split("###")[0]
    head = "| Method | Δ AIME24 (points) | Δ MATH500 (points) | Δ Synthetic (points) | Δ Avg (points) | Δ final"
    assert head in paired  # one column per benchmark (the paper's order) and the Avg
    steer = next(line for line in paired.splitlines() if line.startswith("| STEER |")).split(" | ")
    assert steer[4] == f"+9.0 ± 4.3 [-46.1, +64.1] p {p:.3f} (n 2)"
    # AIME24: 40 − 25, 30 − 35 -> +15, −5: mean 5, SE 10, t = 0.5: p = 1 − (2/π)·atan(0.5) = 0.705. MATH500: +20, +14:
    # mean 17, SE 3, t = 17/3: p = 0.111. Synthetic: +5 both seeds (to rounding: 100·0.55 − 100·0.50 and
    # 100·0.45 − 100·0.40 differ in the last bits), so SE ≈ 0 and p ≈ 0: the only p in its column, Holm starts it.
    assert steer[1] == f"+5.0 ± 10.0 [-122.1, +132.1] p {1 - 2 / math.pi * math.atan(0.5):.3f} (n 2)"
    assert steer[2] == f"+17.0 ± 3.0 [-21.1, +55.1] p {1 - 2 / math.pi * math.atan(17 / 3):.3f} (n 2)"
    assert steer[3] == "+5.0 ± 0.0 [+5.0, +5.0] p <0.001* (n 2)"
    # probe entropy, all tokens: 0.30 − 0.20, 0.28 − 0.21 -> mean 0.085, SE 0.015; fork: 0.30, 0.24 -> 0.27, 0.03
    assert steer[5].startswith("+0.0850 ± 0.0150 ")
    assert steer[6].startswith("+0.2700 ± 0.0300 ")
    # one evaluated seed: no spread; no probe metrics
    assert "| Clip-Higher | -5.0 (n 1) | -10.0 (n 1) | +10.0 (n 1) | -1.7 (n 1) | — | — |" in paired
    assert "Holm's step-down correction" in paired
    # Seeds a gap needs: s_d of STEER's Avg differences (13.33, 4.67) = 4.33·√2 = 6.13, the only method with 2 seeds
    sd = 26 / 6 * math.sqrt(2)
    needs = [power.seeds_needed(g, sd) for g in (1, 2, 4)]
    assert f"1 point: {needs[0]}; 2 points: {needs[1]}; 4 points: {needs[2]} (s_d = {sd:.2f} points, " in paired
    # collapse: GRPO 0.40 -> (0.20 + 0.21) / 2, ratios 0.50 and 0.21/0.40 (0.52499… in floats); fork 0.70 -> 0.11,
    # ratios 0.143 and 0.171
    assert "| GRPO | 0.4000 → 0.2050 (×0.50–0.52) | 0.7000 → 0.1100 (×0.14–0.17) |" in text
    assert "![pass@k on the held-out problems](figures/pass_at_k.png)" in text


@pytest.mark.slow
def test_cli_from_files(setup, tmp_path: Path) -> None:
    _, _, config = setup
    out = tmp_path / "rep_files"
    assert cli.main(["report", "--config", str(config), "--source", "files", "--out", str(out)]) == 0
    assert _md_rows(out / "main_table.md") == EXPECTED
    assert (out / "figures" / "steer_lambda.png").is_file()


def test_reference_transcription_is_consistent() -> None:
    """Every paper row's Avg is the mean of its six benchmarks up to the paper's rounding (catches typos)."""
    rows = [(t, r, c) for t, table in reference.REFERENCE.items() for r, c in table.items() if c is not None]
    assert len(rows) == 28
    for table, row, cells in rows:
        six = [cells[b] for b in reference.COLUMNS[:-1]]
        assert abs(sum(six) / 6 - cells["avg"]) <= 0.0501, (table, row)
    assert reference.paper_value("table3_7b", "STEER", "aime24") == 36.2
    assert reference.paper_value("table6_extreme", "GRPO (extreme clipping)", "avg") == 44.9
    assert reference.paper_value("table3_7b", "Fork Tokens", "aime24") is None
    assert reference.paper_value("plugin_7b", "STEER", "aime24") is None
    # The plug-in table's OPO baseline row (issue 11, item 11), the same numbers as Table 3's OPO row.
    opo = [reference.paper_value("plugin_7b", "OPO", c) for c in reference.COLUMNS]
    assert opo == [32.2, 13.4, 71.5, 82.2, 38.2, 41.0, 46.4]


@pytest.mark.slow
def test_unknown_reference_and_empty_store_are_clear_errors(setup, tmp_path: Path) -> None:
    exp, uri, _ = setup
    from steer_bench.errors import SteerBenchError

    with pytest.raises(SteerBenchError, match=r"unknown reference table 'table9'.*table3_7b"):
        build_report(exp.model_copy(update={"reference": "table9"}), tmp_path / "a", uri=uri)
    empty = exp.model_copy(update={"name": "nothing_here"})
    with pytest.raises(SteerBenchError, match="no evaluation or training results of experiment 'nothing_here'"):
        build_report(empty, tmp_path / "b", uri=uri)


def test_best_marks_ties_at_display_precision_and_ignores_missing() -> None:
    cells = {("a", "x"): tables.Cell(50.04, None, 1, 1), ("b", "x"): tables.Cell(49.96, None, 1, 1),
             ("c", "x"): tables.Cell(None, None, 0, 1), ("a", "y"): tables.Cell(None, None, 0, 1),
             ("b", "y"): tables.Cell(None, None, 0, 1), ("c", "y"): tables.Cell(None, None, 0, 1)}  # fmt: skip
    table = tables.Table(list("abc"), {"a": "A", "b": "B", "c": "C"}, dict.fromkeys("abc", True), ["x", "y"], cells)
    assert table.best("x") == {"a", "b"}  # both show as 50.0
    assert table.best("y") == set()


def test_seed_band_and_skipped_figures(tmp_path: Path) -> None:
    steps, mean, lo, hi = figures.seed_band([[(1, 1.0), (2, 3.0)], [(1, 2.0), (3, 5.0)]])
    assert steps.tolist() == [1, 2, 3]
    assert mean.tolist() == [1.5, 3.0, 5.0]
    assert lo.tolist() == [1.0, 3.0, 5.0]
    assert hi.tolist() == [2.0, 3.0, 5.0]
    curves = {("grpo", 0): {"rollout/entropy_mean": [(1, 0.5), (2, 0.4)]}}
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "steer_lambda.png").write_bytes(b"stale")  # from an earlier report: removed
    drawn = figures.draw_all(curves, ["grpo"], {"grpo": "GRPO"}, tmp_path)
    assert drawn["entropy"] == "figures/entropy.png"
    assert drawn["steer_lambda"] is None  # no run logged steer/*: skipped, not an empty plot
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == ["entropy.png"]
    assert (
        "Not drawn (no run logged its metrics): probe_entropy (probe/avg_at_k, probe/entropy, probe/entropy_fork); "
        "val_accuracy (val/avg_at_k)"
    ) in "\n".join(document.figures_section(drawn))

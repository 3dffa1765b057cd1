"""Evaluation protocols: how a benchmark is sampled and graded, as config (``configs/protocols/<name>.yaml``).

A protocol fixes everything that moves a score besides the model: temperature, top-p, the new-token budget,
k samples per unique problem (per benchmark), the sampling seed, whether the chat template is applied and
the primary grader. It is recorded in full in every summary, so a number never travels without it.

Seeding: benchmark ``b`` is sampled with seed ``protocol.seed + benchmark_seed(b)`` (a stable hash of the
name), so benchmarks draw independent streams and adding a benchmark changes no other benchmark's samples.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from pydantic import Field, model_validator

from steer_bench.config import StrictModel, apply_overrides, read_yaml, validate
from steer_bench.config.run import Grader
from steer_bench.data.registry import get_spec
from steer_bench.errors import SteerBenchError
from steer_bench.rollout import SamplingParams

PROTOCOLS_DIR = Path(__file__).resolve().parents[2] / "configs" / "protocols"


class Protocol(StrictModel):
    name: str
    temperature: float = Field(ge=0)
    """0 = greedy decoding."""
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(ge=1)
    k: dict[str, int] = {}
    """Samples per unique problem, per benchmark (registry name); others get ``default_k``."""
    default_k: int = Field(1, ge=1)
    seed: int = Field(0, ge=0)
    chat_template: bool = True
    """Apply the tokenizer's chat template (False: the prompt messages' contents joined by a blank line)."""
    grader: Grader = "math_verify"
    """Primary grader (``steer_bench.grading``); math-verify and the (family's) strict matcher are recorded per
    sample either way. The paper protocol: release_both, the release's "strict box OR checker"."""

    @model_validator(mode="after")
    def _check(self) -> Protocol:
        bad = {b: k for b, k in self.k.items() if k < 1}
        if bad:
            raise ValueError(f"k must be >= 1, got {bad}")
        if self.temperature == 0 and max([self.default_k, *self.k.values()]) > 1:
            raise ValueError("greedy decoding (temperature 0) gives k identical samples: use k = 1")
        return self

    def k_for(self, benchmark: str) -> int:
        return self.k.get(benchmark, self.default_k)

    def sampling(self, benchmark: str) -> SamplingParams:
        """The sampling parameters of ``benchmark`` (n = its k; its own seed)."""
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            n=self.k_for(benchmark),
            seed=self.seed + benchmark_seed(benchmark),
        )


def benchmark_seed(benchmark: str) -> int:
    """A stable offset in [0, 2^24) from the benchmark's name (not Python's salted ``hash``)."""
    return int.from_bytes(hashlib.sha256(benchmark.encode()).digest()[:3], "big")


def pass_ks(k: int) -> list[int]:
    """The k's that pass@k / maj@k are reported for: powers of two up to ``k``, and ``k`` itself."""
    return sorted({2**i for i in range(k.bit_length()) if 2**i <= k} | {k})


def available_protocols() -> list[str]:
    return sorted(p.stem for p in PROTOCOLS_DIR.glob("*.yaml"))


def load_protocol(spec: str | dict[str, Any], overrides: list[str] | None = None) -> Protocol:
    """A protocol from a name (``configs/protocols/<name>.yaml``), a YAML path or a mapping, with
    ``key=value`` overrides (e.g. ``max_new_tokens=512``, ``k.aime24=8``). Benchmark names in ``k`` must be
    registered datasets."""
    if isinstance(spec, dict):
        data, source = spec, f"protocol {spec.get('name', '<unnamed>')!r}"
    else:
        path = Path(spec) if spec.endswith((".yaml", ".yml")) else PROTOCOLS_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise SteerBenchError(
                f"unknown protocol {spec!r}: not a YAML file and not one of {available_protocols()} "
                f"(in {PROTOCOLS_DIR})"
            )
        data, source = read_yaml(path), str(path)
    protocol = validate(Protocol, apply_overrides(data, overrides), source=source)
    for benchmark in protocol.k:
        try:
            get_spec(benchmark)  # a typo in a benchmark name is an error, not a silent default k
        except SteerBenchError as e:
            raise SteerBenchError(f"{source}: in 'k': {e}") from None
    return protocol

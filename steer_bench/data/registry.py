"""The dataset registry: name -> where the data comes from, how to read it, which prompt it uses.

Each dataset is readable from a local directory of verl-format parquet files (the STEER release, docs/recipe.md §R2)
or from the Hugging Face Hub. The local directory wins when one is given (``--data-dir`` or the env var
``STEER_BENCH_SHARED_DATA``).

Problem ids (``<dataset>/<id>``): the source's own ``extra_info.index`` / id column when it is unique per
problem (zero-padded to 4 digits when an integer): aime24/aime25 0-29, amc23 43-82 (positions in a larger
AMC file), math500 0-499, minerva 0-271, olympiadbench 1606-3102 (OlympiadBench's own ids), gsm8k 0-1318,
omni_math 0-4427, DAPO-Math-17k a UUID. Where a source has no id column, or its ids are not unique per
problem, the id is the first 12 hex digits of the SHA-256 of the problem text.

**Hub ids, configs, splits and column names were not verified (this machine is offline); check them before
a paper-scale run.**
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from steer_bench.errors import SteerBenchError

SHARED_DATA_ENV = "STEER_BENCH_SHARED_DATA"


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset. ``layout="verl"``: rows already in the verl schema (prompt/reward_model/extra_info);
    ``layout="columns"``: plain columns named by ``problem``, ``answer`` and optionally ``id``.
    ``answer_after``: keep only the text after this marker (GSM8K's ``####``)."""

    repo: str
    split: str
    config: str | None = None
    layout: str = "columns"
    problem: str = "problem"
    answer: str = "answer"
    id: str | None = None
    answer_after: str | None = None


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    role: str  # "train" | "eval"
    paper_format: str  # key of templates.FORMATS: the release's instruction around the problem
    local_file: str | None = None  # file name inside the local data directory
    hub: HubSource | None = None
    template: str = "paper"  # default prompt template
    synthetic_split: str | None = None  # "train" | "test" for the synthetic task
    default_size: int | None = None  # synthetic only: problems generated when no --limit is given


REGISTRY: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "dapo_math_17k", "train", "dapo_boxed", "DAPO-Math-17k.parquet",
            HubSource("BytedTsinghua-SIA/DAPO-Math-17k", "train", layout="verl"),
        ),
        DatasetSpec(
            "aime24", "eval", "dapo_answer", "aime24.parquet",
            HubSource("HuggingFaceH4/aime_2024", "train", id="id"),
        ),
        DatasetSpec(
            "aime25", "eval", "dapo_answer", "aime25.parquet",
            HubSource("yentinglin/aime_2025", "train", id="id"),
        ),
        DatasetSpec(
            "amc23", "eval", "dapo_answer", "amc23.parquet",
            HubSource("math-ai/amc23", "test", problem="question", id="id"),
        ),
        DatasetSpec(
            "math500", "eval", "bare", "math500.parquet",
            HubSource("HuggingFaceH4/MATH-500", "test", id="unique_id"),
        ),
        DatasetSpec(
            "minerva", "eval", "bare", "minerva_math.parquet",
            HubSource("math-ai/minervamath", "test", problem="question"),
        ),
        DatasetSpec(
            "olympiadbench", "eval", "bare", "olympiadbench.parquet",
            HubSource("Hothan/OlympiadBench", "train", "OE_TO_maths_en_COMP", problem="question",
                      answer="final_answer", id="id"),
        ),
        DatasetSpec(
            "gsm8k", "eval", "dapo_answer_blank", "gsm8k_test.parquet",
            HubSource("openai/gsm8k", "test", "main", problem="question", answer_after="####"),
        ),
        DatasetSpec(
            "omni_math", "eval", "dapo_answer_blank", "omni.parquet",
            HubSource("KbsdJames/Omni-MATH", "test"),
        ),
        DatasetSpec("synth_train", "train", "bare", synthetic_split="train", default_size=20_000),
        DatasetSpec("synth_test", "eval", "bare", synthetic_split="test", default_size=500),
    )
}  # fmt: skip
PAPER_BENCHMARKS = ("aime24", "aime25", "amc23", "math500", "minerva", "olympiadbench")


def get_spec(name: str) -> DatasetSpec:
    """The registry entry of ``name``; a clear error (with the closest valid name) otherwise."""
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, REGISTRY, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise SteerBenchError(f"unknown dataset {name!r}{hint}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]

"""Display names: benchmarks in the paper's column order; methods and eval-only rows named as in the paper."""

from __future__ import annotations

from functools import cache

from steer_bench.config.method import list_methods, load_method

# The paper's column order (docs/recipe.md §R13); benchmarks it does not have follow in the config's order.
BENCHMARKS: dict[str, str] = {
    "aime24": "AIME24",
    "aime25": "AIME25",
    "amc23": "AMC23",
    "math500": "MATH500",
    "minerva": "Minerva",
    "olympiadbench": "OlympiadBench",
    "gsm8k": "GSM8K",
    "omni_math": "Omni-MATH",
    "synth_test": "Synthetic",
}
AVG = "avg"  # the Avg column: unweighted mean over the benchmarks

# Eval-only rows (a model evaluated without training) with a name in the paper's tables.
EVAL_ONLY_ROWS: dict[str, str] = {"base": "Base", "simplerl_zoo": "SimpleRL-Zoo", "eurus_prime": "Eurus-PRIME"}


def order_benchmarks(names: list[str]) -> list[str]:
    """The paper's order first, then the rest as given."""
    known = [b for b in BENCHMARKS if b in names]
    return known + [b for b in names if b not in BENCHMARKS]


def benchmark_label(name: str) -> str:
    return "Avg" if name == AVG else BENCHMARKS.get(name, name)


@cache
def method_label(name: str) -> str:
    """The preset's ``label`` (configs/methods/<name>.yaml); our ablations are marked as such."""
    if name not in list_methods():
        return name
    method = load_method(name)
    if method.ablation and "ablation" not in method.label:
        return f"{method.label} (ours: ablation)"
    return method.label


def row_label(name: str, *, trained: bool) -> str:
    return method_label(name) if trained else EVAL_ONLY_ROWS.get(name, name)

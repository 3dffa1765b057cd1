"""The package root shows the layers, and imports only go down: a module may import its own layer or lower
ones, never a higher one, and no two packages import each other (directly or around a cycle). Every import
counts, including those inside functions (lazy imports hide cycles, they do not remove them)."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "steer_bench"

# Lowest first. A top-level package or root module of steer_bench belongs to exactly one layer.
LAYERS: list[tuple[str, ...]] = [
    ("errors", "files", "inputs"),  # no steer_bench imports beyond these
    ("algos", "sharding"),  # pure torch: the objective library; FSDP2 as the trainer drives it
    ("config",),  # typed configs (a preset resolves into an algos.Method)
    ("data", "grading"),
    ("rollout", "tracking"),
    ("evaluation", "analysis", "train", "warmstart"),  # warmstart: the SFT that builds the miniature's policy
    ("tree",),
    ("experiment",),  # the study: what Snakemake runs
    ("report", "preflight", "launch"),  # above the study: they run it
    ("commands", "cli", "__main__", "__init__"),
]
LAYER_OF = {unit: i for i, units in enumerate(LAYERS) for unit in units}


def unit_of(module: str) -> str:
    """``steer_bench.train.loop`` -> ``train``; ``steer_bench`` -> ``__init__``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports(source: str, module: str) -> Iterable[str]:
    """The steer_bench modules ``source`` (the text of ``module``) imports, anywhere in it."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names if a.name.split(".")[0] == "steer_bench")
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            if name.split(".")[0] == "steer_bench":
                if name == "steer_bench":  # `from steer_bench import files`: the names are modules
                    yield from (f"steer_bench.{a.name}" for a in node.names)
                else:
                    yield name


def violations(sources: Mapping[str, str]) -> tuple[list[str], list[list[str]]]:
    """(upward imports as "a -> b" lines, cycles between units) for {module name: source}."""
    upward: list[str] = []
    edges: dict[str, set[str]] = {}
    for module, source in sources.items():
        src = unit_of(module)
        if src not in LAYER_OF:
            upward.append(f"{module}: unit {src!r} is in no layer")
            continue
        for target in imports(source, module):
            dst = unit_of(target)
            if dst == src:
                continue
            if dst not in LAYER_OF:
                upward.append(f"{module} -> {target}: unit {dst!r} is in no layer")
            elif LAYER_OF[dst] > LAYER_OF[src]:
                upward.append(f"{module} -> {target} (layer {LAYER_OF[src]} imports layer {LAYER_OF[dst]})")
            edges.setdefault(src, set()).add(dst)
    return upward, _cycles(edges)


def _cycles(edges: Mapping[str, set[str]]) -> list[list[str]]:
    """Elementary cycles found by depth-first search (each reported once, from its smallest unit)."""
    found: list[list[str]] = []

    def walk(start: str, node: str, path: list[str]) -> None:
        for nxt in sorted(edges.get(node, ())):
            if nxt == start:
                found.append([*path, start])
            elif nxt not in path and nxt > start:
                walk(start, nxt, [*path, nxt])

    for start in sorted(edges):
        walk(start, start, [start])
    return found


def package_sources() -> dict[str, str]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[".".join(parts)] = path.read_text()
    return out


def test_every_import_goes_down_and_no_packages_form_a_cycle() -> None:
    upward, cycles = violations(package_sources())
    assert upward == []
    assert cycles == []


def test_the_root_holds_only_layered_units() -> None:
    units = {p.stem for p in PACKAGE.glob("*.py")} | {
        p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()
    }
    assert units == set(LAYER_OF)


@pytest.mark.parametrize(
    ("sources", "expected"),
    [
        ({"steer_bench.algos.base": "from steer_bench.train.loop import train\n"}, "upward"),
        ({"steer_bench.config.run": "def f():\n    from steer_bench.report import collect\n"}, "upward"),
        ({"steer_bench.grading.pool": "from ..train import update\n"}, "upward"),  # relative
        ({"steer_bench.data.x": "import steer_bench.grading.pool\n",
          "steer_bench.grading.y": "from steer_bench import data\n"}, "cycle"),  # same layer, but a cycle
        ({"steer_bench.train.loop": "from steer_bench.algos import Method\nfrom steer_bench.train import update\n"},
         "clean"),
    ],
)  # fmt: skip
def test_the_checker_catches_an_upward_import_and_a_cycle(sources: dict[str, str], expected: str) -> None:
    upward, cycles = violations(sources)
    assert (expected == "upward") == bool(upward), upward
    assert (expected == "cycle") == bool(cycles), cycles

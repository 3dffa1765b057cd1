"""Grading throughput (verdicts/s) on real MATH500 golds with 1 and 2 worker processes, per-call overhead,
and a pathological batch; with ``--samples``, on the miniature's own responses too. Run by hand:

    .venv/bin/python benchmarks/grading_throughput.py [--data-dir ../shared/data] [--repeats 3]
        [--samples results/miniature/eval/base/synth_test/samples.jsonl]

``--samples``: an evaluation's ``samples.jsonl`` (``response``, ``gold``), e.g. the miniature's base-row
evaluation (200 problems × 4 samples at T = 1). Each of ``--repeats`` rounds grades it with a fresh 2-worker
pool (cold: no gold cached) with and without de-duplication of identical (response, gold) pairs, and the
MATH500 set likewise, interleaved (noise hits all alike); the table gives the median over rounds and checks
that both ways give the same verdicts.

Items: for each of the 500 MATH500 golds, a short worked response ending in ``\\boxed{gold}`` and one ending
in a different number (1,000 verdicts per call). "cold" is the first call of a fresh pool (every gold parsed
for the first time); each "warm" call has new wrong answers but the same golds, cached in the workers (as in
training, where a prompt's n samples share a gold). CPU seconds are the workers' own (from /proc), so
verdicts per CPU-second stay comparable on a busy machine; the load average is printed for context.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import time
from pathlib import Path

import pandas as pd

from steer_bench.grading import Grader, grade_one, summarize_verdicts

FILLER = "We expand both sides, collect like terms and check the boundary cases. " * 3


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _items(data_dir: Path, offset: int) -> tuple[list[str], list[str]]:
    """A response ending in each gold, and one ending in the gold with its first integer + ``offset``."""
    df = pd.read_parquet(data_dir / "math500.parquet")
    golds = [r["ground_truth"] for r in df["reward_model"]]
    wrong = [re.sub(r"\d+", lambda m: str(int(m.group()) + offset), g, count=1) if re.search(r"\d", g)
             else f"{g}+{offset}" for g in golds]  # fmt: skip
    responses = [f"{FILLER}So the final answer is \\boxed{{{g}}}." for g in golds + wrong]
    return responses, golds + golds


def _timed_call(grader: Grader, responses: list[str], golds: list[str]) -> tuple[float, float, dict]:
    pids = grader.pids
    cpu0 = sum(_cpu_seconds(p) for p in pids)
    t0 = time.perf_counter()
    verdicts = grader.grade(responses, golds)
    wall = time.perf_counter() - t0
    cpu = sum(_cpu_seconds(p) for p in pids) - cpu0
    return wall, cpu, summarize_verdicts(verdicts)


def bench_pool(workers: int, data_dir: Path, repeats: int) -> list[str]:
    rows = []
    t0 = time.perf_counter()
    with Grader(workers=workers, timeout=10.0) as grader:
        grader.grade(["\\boxed{1}"] * workers, ["1"] * workers)  # wait until every worker is up
        startup = time.perf_counter() - t0
        for r, label in enumerate(["cold"] + ["warm"] * repeats):
            responses, golds = _items(data_dir, offset=r + 1)  # new wrong answers each call
            wall, cpu, s = _timed_call(grader, responses, golds)
            rows.append(
                f"| {workers} | {label} | {len(responses)} | {wall:.2f} | {len(responses) / wall:.0f} | "
                f"{len(responses) / cpu:.0f} | {s['n_timeout']} | {s['n_error']} | {s['accuracy']:.3f} |"
            )
        n_calls, t1 = 200, time.perf_counter()
        for _ in range(n_calls):
            grader.grade(["\\boxed{7}"], ["7"])
        per_call_ms = (time.perf_counter() - t1) / n_calls * 1e3
    print(f"workers={workers}: start-up {startup:.2f} s, one-item call {per_call_ms:.2f} ms")
    return rows


def _samples(path: Path) -> tuple[list[str], list[str]]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r["response"] for r in rows], [str(r["gold"]) for r in rows]


def bench_dedupe(sets: dict[str, tuple[list[str], list[str]]], repeats: int, workers: int = 2) -> list[str]:
    """Per set, verdicts/s of one cold call (fresh pool, started before timing) with and without de-duplication,
    interleaved over rounds; medians. Asserts that both ways return the same verdicts."""
    walls: dict[tuple[str, bool], list[float]] = {(name, d): [] for name in sets for d in (True, False)}
    for r in range(repeats):
        for name, (responses, golds) in sets.items():
            verdicts = {}
            for dedupe in (True, False) if r % 2 == 0 else (False, True):  # alternate which goes first
                with Grader(workers=workers, timeout=10.0) as grader:
                    grader.grade(["\\boxed{1}"] * workers, ["1"] * workers)  # every worker up
                    t0 = time.perf_counter()
                    verdicts[dedupe] = grader.grade(responses, golds, dedupe=dedupe)
                    walls[(name, dedupe)].append(time.perf_counter() - t0)
            if verdicts[True] != verdicts[False]:
                raise SystemExit(f"{name}: de-duplicated verdicts differ from grading every item")
    rows = ["| set | verdicts | distinct (response, gold) | dedupe | wall s (median) | verdicts/s | rounds |",
            "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, (responses, golds) in sets.items():
        distinct = len(set(zip(responses, golds, strict=True)))
        for dedupe in (True, False):
            wall = statistics.median(walls[(name, dedupe)])
            each = ", ".join(f"{w:.3f}" for w in walls[(name, dedupe)])
            rows.append(f"| {name} | {len(responses)} | {distinct} | {'yes' if dedupe else 'no'} | {wall:.3f} | "
                        f"{len(responses) / wall:.0f} | {each} |")  # fmt: skip
    return rows


def bench_in_process(responses: list[str], golds: list[str]) -> str:
    t0 = time.perf_counter()
    for r, g in zip(responses, golds, strict=True):
        grade_one(r, g)
    wall = time.perf_counter() - t0
    return f"| in-process | grade_one | {len(responses)} | {wall:.2f} | {len(responses) / wall:.0f} | | | | |"


def bench_pathological(workers: int) -> None:
    bad = ["\\boxed{9^{9^{9^{9}}}}", "\\boxed{" + "(" * 300 + "1" + ")" * 300 + "}"]
    responses = [*bad, *(f"\\boxed{{{i}}}" for i in range(98))]
    golds = ["5", "1", *(str(i) for i in range(98))]
    with Grader(workers=workers, timeout=2.0) as grader:
        grader.grade(["\\boxed{1}"] * workers, ["1"] * workers)
        t0 = time.perf_counter()
        s = summarize_verdicts(grader.grade(responses, golds))
        wall = time.perf_counter() - t0
    print(
        f"pathological batch (2 stuck of 100, timeout 2 s, {workers} workers): {wall:.2f} s, "
        f"timeouts {s['n_timeout']}, errors {s['n_error']}, correct {s['n_correct']}/98 normal"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data-dir", type=Path, default=Path(os.environ.get("STEER_BENCH_SHARED_DATA", "../shared/data"))
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=Path, help="an evaluation's samples.jsonl (the miniature's responses)")
    parser.add_argument("--dedupe-only", action="store_true", help="only the de-duplication comparison")
    args = parser.parse_args()
    print(f"load average at start: {os.getloadavg()}; cores: {os.cpu_count()}")
    sets = {"math500": _items(args.data_dir, offset=1)}
    if args.samples:
        sets = {"miniature": _samples(args.samples)} | sets
    print("\n".join(bench_dedupe(sets, args.repeats)))
    if args.dedupe_only:
        return
    rows = ["| workers | call | verdicts | wall s | verdicts/s | verdicts/CPU-s | timeouts | errors | accuracy |",
            "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for workers in (1, 2):
        rows += bench_pool(workers, args.data_dir, args.repeats)
    rows.append(bench_in_process(*_items(args.data_dir, offset=1)))
    print("\n".join(rows))
    bench_pathological(2)


if __name__ == "__main__":
    main()

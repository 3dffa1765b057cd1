"""Run one ``steer-bench`` subcommand in this real process with one fault injected, then let it crash as it
would in the wild. Used by the fault tests as ``python inject.py FAULT -- <steer-bench arguments>``.

Faults (each fires once, at a deterministic point, so a test knows exactly what was interrupted):

- ``kill-at-replace:<name>:<n>``: SIGKILL right before the n-th ``os.replace`` whose source or destination is
  called ``<name>`` or ``.<name>.old`` (``last``: the checkpoint directory's renames; ``main_table.tex``: a report
  table), i.e. after the temporary copy is complete and before it is moved into place.
- ``kill-at-grade:<n>``: SIGKILL at the n-th call of ``Grader.grade`` (an evaluation between two benchmarks).
- ``fsize-after-save:<bytes>``: after the first completed checkpoint save, cap the size of any file this
  process writes (RLIMIT_FSIZE, with SIGXFSZ ignored so writes fail with EFBIG): a disk that fills up mid-run.
- ``kill-in-update:<step>:<rank>`` / ``stop-in-update:<step>:<rank>``: rank ``<rank>`` sends itself SIGKILL (the
  OOM killer, a lost node) or SIGSTOP (a hang: every thread stops) as it starts the update phase of step ``<step>``.

Inside jobs whose command line the test does not write (a SLURM job running ``steer-bench launch``), the
``site/sitecustomize.py`` beside this file arms ``$STEER_BENCH_FAULT`` in every rank that starts with ``site/`` on
``PYTHONPATH``.
"""

from __future__ import annotations

import os
import resource
import signal
import sys
import time
from pathlib import Path


def _kill() -> None:
    sys.stdout.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_replace(name: str, nth: int) -> None:
    real, seen = os.replace, [0]

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        if {Path(src).name, Path(dst).name} & {name, f".{name}.old"}:
            seen[0] += 1
            if seen[0] == nth:
                _kill()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def kill_at_grade(nth: int) -> None:
    from steer_bench import grading

    real, seen = grading.Grader.grade, [0]

    def grade(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen[0] += 1
        if seen[0] == nth:
            _kill()
        return real(self, *args, **kwargs)

    grading.Grader.grade = grade


def fsize_after_save(limit: int) -> None:
    from steer_bench.train import checkpoint, loop

    real = checkpoint.save_checkpoint

    def save(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    loop.save_checkpoint = save  # the name the loop calls


def signal_in_update(sig: signal.Signals, step: int, rank: int) -> None:
    from steer_bench.train import loop

    real = loop.update

    def update(run, step_data):  # type: ignore[no-untyped-def]
        if step_data.number == step and run.accelerator.process_index == rank:
            print(f"inject: {sig.name} to rank {rank} in step {step}, phase 'update', at {time.time():.3f}",
                  file=sys.stderr, flush=True)  # fmt: skip
            sys.stdout.flush()
            os.kill(os.getpid(), sig)
        return real(run, step_data)

    loop.update = update  # the name train() calls


def arm(fault: str) -> None:
    """Install ``fault`` (module docstring) in this process."""
    kind, *params = fault.split(":")
    if kind == "kill-at-replace":
        kill_at_replace(params[0], int(params[1]))
    elif kind == "kill-at-grade":
        kill_at_grade(int(params[0]))
    elif kind == "fsize-after-save":
        fsize_after_save(int(params[0]))
    elif kind in ("kill-in-update", "stop-in-update"):
        sig = signal.SIGKILL if kind == "kill-in-update" else signal.SIGSTOP
        signal_in_update(sig, int(params[0]), int(params[1]))
    else:
        raise SystemExit(f"unknown fault {fault!r}")


def main() -> int:
    fault, sep, *argv = sys.argv[1:]
    assert sep == "--", "usage: inject.py FAULT -- ARGS"
    arm(fault)
    from steer_bench.cli import main as cli

    return cli(argv)


if __name__ == "__main__":
    sys.exit(main())

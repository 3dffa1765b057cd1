"""Grading workers killed from outside (SIGKILL, as the OOM killer does), busy or idle: the worker is replaced,
an item it was grading is counted as an error (never a silent wrong answer), and the caller goes on —
including a training run, whose step then logs the error."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from trainrun import make_cfg

from steer_bench.config.method import load_method
from steer_bench.files import read_jsonl
from steer_bench.grading import Grader
from steer_bench.grading import pool as grading_pool
from steer_bench.grading import verdict as grading_verdict
from steer_bench.train import train


def _slow_on_marker(response: str, gold: str, cache: dict) -> tuple:
    if response == "SLOW":
        time.sleep(30)  # stays busy until killed
    return (response == gold, response, "ok", None)


def test_a_busy_worker_killed_from_outside(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading_verdict, "_mv_body", _slow_on_marker)  # fork: the workers inherit the patch
    with Grader(workers=2, timeout=60, start_method="fork") as g:
        g.grade(["1"], ["1"])  # workers up
        pids = set(g.pids)
        killer = threading.Timer(1.0, lambda: [os.kill(p, signal.SIGKILL) for p in pids])
        killer.start()
        verdicts = g.grade(["a", "SLOW", "b"], ["a", "x", "b"])
        killer.join()
        assert verdicts[1].status == "error"
        assert "died" in verdicts[1].error
        assert verdicts[1].math_verify is None  # not a False
        assert [v.correct for v in verdicts] == [True, False, True]
        assert grading_verdict.summarize_verdicts(verdicts)["n_error"] == 1
        # The other (idle) worker died too: it is found dead and replaced when next used.
        assert all(v.correct for v in g.grade(list("cdefgh"), list("cdefgh")))
        assert not pids & set(g.pids)


def test_an_idle_worker_killed_between_calls_is_replaced() -> None:
    with Grader(workers=2, timeout=10) as g:
        assert all(v.correct for v in g.grade(["\\boxed{1}", "\\boxed{2}"], ["1", "2"]))
        for pid in g.pids:
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        verdicts = g.grade([f"\\boxed{{{i}}}" for i in range(8)], [str(i) for i in range(8)])
        assert [v.status for v in verdicts] == ["ok"] * 8
        assert all(v.correct for v in verdicts)
        assert g.restarts == 2


@pytest.mark.slow
def test_a_training_run_goes_on_when_its_grader_workers_die(
    model_dir: Path, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_grade, calls = Grader.grade, []

    def grade_then_kill_workers(self: Grader, responses, golds):  # type: ignore[no-untyped-def]
        out = real_grade(self, responses, golds)
        calls.append(len(responses))
        if len(calls) == 1:  # after step 1's grading: every worker dies
            for pid in self.pids:
                os.kill(pid, signal.SIGKILL)
        return out

    monkeypatch.setattr(Grader, "grade", grade_then_kill_workers)
    summary = train(make_cfg(model_dir, data, steps=3), load_method("grpo"), tmp_path)
    rows = read_jsonl(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all(r["grading/errors"] == 0 and r["grading/timeouts"] == 0 for r in rows)  # replaced before use
    assert summary["steps"] == 3


def test_a_worker_killed_during_start_up_is_replaced() -> None:
    with Grader(workers=1, timeout=10) as g:
        os.kill(g.pids[0], signal.SIGKILL)  # before its warm-up finished: never ready
        verdicts = g.grade(["\\boxed{1}", "\\boxed{3}"], ["1", "2"])
        assert [v.correct for v in verdicts] == [True, False]
        assert g.restarts == 1


def test_a_start_up_that_fails_on_its_own_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(grading_pool, "_worker_main", lambda conn, timeout: os._exit(1))  # e.g. an import error
    with (
        Grader(workers=1, timeout=10, start_method="fork") as g,
        pytest.raises(grading_pool.SteerBenchError, match="start-up"),
    ):
        g.grade(["\\boxed{1}"], ["1"])

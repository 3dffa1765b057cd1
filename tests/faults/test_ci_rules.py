"""Under CI=true a vLLM test that would skip fails instead (at module level and inside a test); outside CI it
skips. Runs pytest in a subprocess on a copy of the suite's conftest with tests that lack a module."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"
MODULE_LEVEL = 'import pytest\npytest.importorskip("vllm_not_installed")\n\ndef test_engine():\n    pass\n'
IN_TEST = 'import pytest\n\ndef test_engine():\n    pytest.importorskip("vllm_not_installed")\n'
GPU_SKIP = 'import pytest\n\ndef test_gpu():\n    pytest.skip("needs a CUDA device")\n'


@pytest.mark.parametrize("ci", ["true", ""])
def test_vllm_skips_fail_only_under_ci(tmp_path: Path, ci: str) -> None:
    shutil.copy(CONFTEST, tmp_path / "conftest.py")
    (tmp_path / "test_module_level.py").write_text(MODULE_LEVEL)
    (tmp_path / "test_in_test.py").write_text(IN_TEST)
    (tmp_path / "test_other.py").write_text(GPU_SKIP)
    env = {**os.environ, "CI": ci, "STEER_BENCH_SHARED_DATA": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    out = result.stdout.splitlines()[-1]
    if ci:
        assert result.returncode == 1, result.stdout
        assert "2 failed" in out
        assert "1 skipped" in out  # the GPU-style skip still skips
    else:
        assert result.returncode == 0, result.stdout
        assert "3 skipped" in out

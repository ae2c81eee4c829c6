#!/usr/bin/env bash
# Reproduces the prebuilt mmcv for the GPU machine from nothing, here (CPU, with the index):
#   1. the kit (prepare.sh: mmcv 2.1.0's sdist, pinned by sha256),
#   2. a Python 3.12 env with PyPI's torch 2.11.0 for cp312 (the CUDA 13.0 build the GPU machine
#      runs; ~4 GB with its nvidia-* packages) in .device/build-py312 (ignored by git),
#   3. tools/device/prebuild_mmcv.py build: sm_90 wheel into .device/prebuilt/, its checks into
#      .device/prebuilt/BUILD.json, its sha256 into .device/MANIFEST.tsv.
# Niced: it takes hours of one core (58 .cu files). Rerun after an interruption: ninja resumes.
#   bash tools/device/prebuild_mmcv.sh [--jobs N]     PYTHON312=path/to/python3.12 to choose
set -euo pipefail
cd "$(dirname "$0")/../.."
PY312=${PYTHON312:-$(command -v python3.12 || echo "$HOME/.pyenv/versions/3.12.1/bin/python")}
ENV=.device/build-py312
bash tools/device/prepare.sh
if [ ! -x "$ENV/bin/python" ]; then
  "$PY312" -m venv "$ENV"
fi
"$ENV/bin/python" -m pip install --disable-pip-version-check -q torch==2.11.0 numpy \
  'setuptools<82' wheel packaging ninja
exec nice -n 15 "$ENV/bin/python" tools/device/prebuild_mmcv.py build "$@"

#!/usr/bin/env bash
# Reproduces the prebuilt mmcv for the GPU machine from nothing, here (CPU, with the index):
#   1. the kit (prepare.sh: mmcv 2.1.0's sdist, pinned by sha256),
#   2. gpu_python.sh: a stand-in for the GPU machine's Python (3.12, PyPI's torch 2.11.0 for
#      cp312, the CUDA 13.0 build; ~5 GB) in build/gpu-py312 (ignored by git),
#   3. tools/device/prebuild_mmcv.py build: compiles in build/prebuild/, puts the sm_90 wheel
#      into .device/prebuilt/, its checks into .device/prebuilt/BUILD.json and its sha256 into
#      .device/MANIFEST.tsv.
# Niced: it takes hours of 2 cores (58 .cu files). Rerun after an interruption: ninja resumes.
#   bash tools/device/prebuild_mmcv.sh [--jobs N]
set -euo pipefail
cd "$(dirname "$0")/../.."
bash tools/device/prepare.sh
PY=$(bash tools/device/gpu_python.sh | tail -1)
# cuobjdump, for the wheel's check (this toolkit is the compiler only): a host tool, kept apart
"$PY" -m pip install --disable-pip-version-check -q --no-deps --upgrade --target build/prebuild/tools \
  "$("$PY" -c 'import sys; sys.path.insert(0, "tools/device"); import prebuild_mmcv as p; print(p.CUOBJDUMP)')"
exec nice -n 15 "$PY" tools/device/prebuild_mmcv.py build "$@"

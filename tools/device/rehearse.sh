#!/usr/bin/env bash
# The GPU command rehearsed on this CPU machine, with the GPU machine's Python and torch
# (gpu_python.sh: Python 3.12, torch 2.11.0 + CUDA 13.0 running on the CPU, no mmcv/mmdet):
# the same cuda_check.py run as on the GPU with `--rehearse` (see its docstring), so the offline
# install, the prebuilt wheel's gate and install, the imports and every CUDA test's code run
# before a GPU minute is spent. Needs the kit (prepare.sh) and the prebuilt wheel
# (prebuild_mmcv.sh). Work files go to build/device/, as on the GPU machine.
#   bash tools/device/rehearse.sh OUTDIR [--budget S] [--stages a,b,...]
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 1 ] || { echo "usage: bash tools/device/rehearse.sh OUTDIR [cuda_check options]" >&2; exit 2; }
out=$1; shift
PY=$(bash tools/device/gpu_python.sh | tail -1)
PYTHON=$PY exec bash tools/device/cuda_check.sh "$out" --rehearse --budget 2400 "$@"

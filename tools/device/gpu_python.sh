#!/usr/bin/env bash
# A stand-in for the GPU machine's Python on this CPU machine, in build/gpu-py312 (ignored by
# git, ~5 GB): Python 3.12 (pyenv's 3.12.1), PyPI's torch 2.11.0 for cp312 (the CUDA 13.0 build
# the GPU machine runs; here it runs on the CPU) and those packages of the GPU machine's image
# that the kit relies on (each must be listed in gpu_machine_packages.txt; versions are the
# index's newest, the image's are unknown). No mmcv, mmengine or mmdet: the kit brings those.
# prebuild_mmcv.sh builds mmcv's wheel with it and rehearse.sh runs the GPU command with it.
# Idempotent (pip skips what is there); prints the interpreter's path last.
#   bash tools/device/gpu_python.sh        PYTHON312=path/to/python3.12 to choose the base
set -euo pipefail
cd "$(dirname "$0")/../.."
ENV=build/gpu-py312
PY312=${PYTHON312:-}
if [ -z "$PY312" ]; then  # a pyenv shim answers `command -v` but may not run: try each
  for candidate in python3.12 "$HOME/.pyenv/versions/3.12.1/bin/python"; do
    if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      PY312=$candidate; break
    fi
  done
fi
[ -n "$PY312" ] || { echo "gpu_python: no Python 3.12 found: set PYTHON312" >&2; exit 1; }
# What the kit's packages and tests import from the image, and mmcv's build tools.
IMAGE=(numpy scipy matplotlib opencv-python-headless pyyaml rich pillow packaging six tqdm
       requests pytest ninja wheel setuptools)
missing=$(python3 - "${IMAGE[@]}" <<'EOF'
import sys
sys.path.insert(0, 'tools/device')
import kit
print(' '.join(p for p in sys.argv[1:] if kit.normalize(p) not in kit.machine_packages()))
EOF
)
if [ -n "$missing" ]; then
  echo "gpu_python: not on the GPU machine (gpu_machine_packages.txt): $missing" >&2
  exit 1
fi
if [ ! -x "$ENV/bin/python" ]; then
  mkdir -p build
  "$PY312" -m venv "$ENV"
fi
# setuptools < 82: mmcv 2.1.0's setup.py imports pkg_resources (the kit carries 81 there).
"$ENV/bin/python" -m pip install --disable-pip-version-check -q torch==2.11.0 \
  "${IMAGE[@]/setuptools/setuptools<82}" >&2
echo "$ENV/bin/python"

#!/usr/bin/env bash
# Installs mmdet_ddetr and everything it needs into a project-local virtual env (.venv, ignored by git).
# Idempotent: a second run only checks the install (no rebuild of mmcv).
#   VENV=path   use another env location
#   CUDA users: install your CUDA torch into the env first, then FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="9.0" (H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual env $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pipi() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

check_ops() {
  "$VPY" - <<'PY'
import sys
try:
    import mmcv
    from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401
    import mmcv._ext  # noqa: F401
except Exception as exc:  # pragma: no cover - reported to the user
    print(f"[install] mmcv ops unavailable: {exc!r}", file=sys.stderr)
    sys.exit(1)
if mmcv.__version__ != "2.1.0":
    print(f"[install] mmcv {mmcv.__version__} installed, 2.1.0 required", file=sys.stderr)
    sys.exit(1)
PY
}

if "$VPY" -c "import mmdet_ddetr, mmdet, mmengine" 2>/dev/null && check_ops 2>/dev/null \
   && [ "${FORCE_REINSTALL:-0}" != 1 ]; then
  echo "[install] $VENV is complete (mmcv ops, mmdet, mmengine, mmdet_ddetr)"
  exit 0
fi

echo "[install] build requirements (torch, setuptools<82, ...)"
pipi -r requirements/build.txt
if ! check_ops 2>/dev/null; then
  echo "[install] compiling mmcv 2.1.0 with ops from source (CPU: ~15 min on 2 cores, cached by pip afterwards)"
  "$VPY" -m pip uninstall -y -q mmcv mmcv-lite 2>/dev/null || true
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} pipi --no-build-isolation -r requirements/mmcv.txt
fi
if ! check_ops; then
  echo "[install] ERROR: mmcv was installed without its compiled ops (mmcv._ext)." >&2
  echo "[install] Fix: 'pip uninstall mmcv' in $VENV and re-run with MMCV_WITH_OPS=1 and --no-build-isolation" >&2
  echo "[install] (an isolated build cannot see torch and silently skips the ops)." >&2
  exit 1
fi
echo "[install] runtime + test requirements"
pipi -r requirements/runtime.txt -r requirements/tests.txt -c requirements/build.txt
pipi -r requirements/deploy.txt -c requirements/build.txt  # onnx, onnxruntime, onnxscript (deployment)
pipi -r requirements/mim.txt -c requirements/build.txt
pipi --no-deps openmim==0.3.9
echo "[install] mmdet_ddetr (editable)"
pipi --no-build-isolation --no-deps -e .
"$VPY" -m pip check >/dev/null 2>&1 || true  # openmim's optional dataset downloader is left out on purpose
"$VPY" -c "import setuptools, sys; v = tuple(map(int, setuptools.__version__.split('.')[:2])); sys.exit(0 if (77, 0) <= v < (82, 0) else 'setuptools ' + setuptools.__version__ + ' is outside >=77.0.3,<82 (mmcv needs pkg_resources)')"
"$VPY" -c "import mmdet_ddetr, mim; print('[install] mmdet_ddetr', mmdet_ddetr.__version__, 'ready')"

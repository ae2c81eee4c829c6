#!/usr/bin/env bash
# Installs mmdet_ddetr and everything it needs into a project-local virtual env (ignored by git).
# Idempotent: a second run only checks the install (no rebuild of mmcv).
#   STACK=openmmlab   (default) the OpenMMLab releases: mmcv 2.1.0, mmengine 0.10.7, mmdet 3.3.0
#   STACK=onedl       their maintained continuation, the OneDL fork: onedl-mmcv 2.3.6,
#                     onedl-mmengine 0.10.12, onedl-mmdetection 3.5.1 (same import names)
#                     Pins: requirements/stack-$STACK.txt. Give each stack its own env (VENV).
#   VENV=path         env location (default .venv)
#   FORCE_REINSTALL=1 run every step even if the env looks complete
#   CUDA users: install your CUDA torch into the env first, then FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST="9.0" (H100/H200).
set -euo pipefail
cd "$(dirname "$0")/.."
STACK=${STACK:-openmmlab}
VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
STACK_REQS=requirements/stack-$STACK.txt
if [ ! -f "$STACK_REQS" ]; then
  echo "[install] unknown STACK=$STACK: use openmmlab (default) or onedl (requirements/stack-*.txt)" >&2
  exit 2
fi
# Installed together after mmcv, with the stack's pins; a new requirement file goes in this list.
REQUIREMENT_FILES=(
  "$STACK_REQS"             # mmengine, mmdet (mmcv is pinned there too, compiled first)
  requirements/runtime.txt  # what mmdet_ddetr imports besides the stack
  requirements/tests.txt
  requirements/deploy.txt  # onnx, onnxruntime, onnxscript: tools/deployment, ONNX Runtime evaluation
  requirements/mim.txt      # what `mim train/test/run` import (openmim itself: see below)
)
# Distributions of the other stacks: they install the same import names, so never both.
OTHER_STACK_DISTS=$(for f in requirements/stack-*.txt; do
  [ "$f" = "$STACK_REQS" ] || sed -n 's/^\([A-Za-z0-9_.-]*\)==.*/\1/p' "$f"; done)
MMCV_REQ=$(grep -E '^(onedl-)?mmcv==' "$STACK_REQS")

if [ ! -x "$VENV/bin/python" ]; then
  echo "[install] creating virtual env $VENV"
  "$PY" -m venv "$VENV"
fi
VPY="$VENV/bin/python"
pipi() { "$VPY" -m pip install --disable-pip-version-check -q "$@"; }

# Exit status 0 when the env holds exactly this stack's pinned versions (and none of another
# stack's distributions) and mmcv's compiled ops import; otherwise prints what differs.
check_stack() {
  "$VPY" - "$STACK_REQS" $OTHER_STACK_DISTS <<'PY'
import re
import sys
from importlib import metadata

stack_file, others = sys.argv[1], sys.argv[2:]
problems = []
with open(stack_file) as f:
    for line in f:
        m = re.match(r'^([A-Za-z0-9_.-]+)==(\S+)', line.split('#')[0].strip())
        if not m:
            continue
        name, pinned = m.groups()
        try:
            found = metadata.version(name)
        except metadata.PackageNotFoundError:
            problems.append(f'{name} is not installed')
            continue
        if found != pinned:
            problems.append(f'{name} {found} installed, {pinned} pinned')
for name in others:
    try:
        problems.append(f'{name} {metadata.version(name)} (another stack) is installed')
    except metadata.PackageNotFoundError:
        pass
try:
    from mmcv.ops import MultiScaleDeformableAttention  # noqa: F401
    import mmcv._ext  # noqa: F401
except Exception as exc:  # reported to the user
    problems.append(f'mmcv ops unavailable: {exc!r}')
for p in problems:
    print(f'[install] {p}', file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}

if [ "${FORCE_REINSTALL:-0}" != 1 ] && check_stack 2>/dev/null \
   && "$VPY" -c "import mmdet_ddetr" 2>/dev/null; then
  "$VPY" tools/misc/link_package_for_mim.py  # envs made before mim's link existed get it here
  echo "[install] $VENV is complete ($STACK stack, mmcv ops, mmdet_ddetr)"
  exit 0
fi

echo "[install] build requirements (torch, setuptools<82, ...)"
pipi -r requirements/build.txt
if [ -n "$OTHER_STACK_DISTS" ]; then
  # pip cannot replace one stack by the other: their distribution names differ.
  "$VPY" -m pip uninstall -y -q $OTHER_STACK_DISTS mmcv-lite mmcv-full 2>/dev/null || true
fi
if ! check_stack 2>/dev/null; then
  echo "[install] $MMCV_REQ with its compiled ops (from source: ~15 min on 2 cores the first time;"
  echo "[install]   pip caches the wheel, keyed by the source archive and Python version)"
  mmcv_install() {
    MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
      pipi --no-build-isolation "$@" "$MMCV_REQ" -c "$STACK_REQS" -c requirements/build.txt
  }
  mmcv_install
  if ! "$VPY" -c "import mmcv._ext" 2>/dev/null; then
    # A cached wheel built against another torch (or without MMCV_WITH_OPS): build afresh.
    echo "[install] the installed mmcv has no working ops; rebuilding without pip's cache"
    mmcv_install --no-cache-dir --force-reinstall --no-deps
  fi
fi
if ! "$VPY" -c "from mmcv.ops import MultiScaleDeformableAttention; import mmcv._ext"; then
  echo "[install] ERROR: mmcv was installed without its compiled ops (mmcv._ext)." >&2
  echo "[install] Fix: 'pip uninstall ${MMCV_REQ%%==*}' in $VENV and re-run with MMCV_WITH_OPS=1 and --no-build-isolation" >&2
  echo "[install] (an isolated build cannot see torch and silently skips the ops)." >&2
  exit 1
fi
echo "[install] ${REQUIREMENT_FILES[*]}"
pipi "${REQUIREMENT_FILES[@]/#/-r}" -c requirements/build.txt
# openmim without its dependencies: its dataset downloader (opendatalab -> openxlab) pins
# setuptools 60, which breaks mmcv and torch.
pipi --no-deps openmim==0.3.9
check_stack
echo "[install] mmdet_ddetr (editable)"
pipi --no-build-isolation --no-deps -e .
"$VPY" tools/misc/link_package_for_mim.py  # `mim train/test/run mmdet_ddetr` find configs, tools
"$VPY" -m pip check >/dev/null 2>&1 || true  # openmim's optional dataset downloader is left out on purpose
"$VPY" -c "import setuptools, sys; v = tuple(map(int, setuptools.__version__.split('.')[:2])); sys.exit(0 if (77, 0) <= v < (82, 0) else 'setuptools ' + setuptools.__version__ + ' is outside >=77.0.3,<82 (mmcv needs pkg_resources)')"
"$VPY" -c "import mmdet_ddetr, mim; print('[install] mmdet_ddetr', mmdet_ddetr.__version__, 'ready ($STACK stack)')"

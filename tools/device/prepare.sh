#!/usr/bin/env bash
# Puts into .device/ (ignored by git) everything the GPU machine lacks, for an offline run of
# tools/device/cuda_check.sh there: the Python 3.12 manylinux wheels and mmcv 2.1.0's source
# distribution pinned in tools/device/requirements-gpu.lock, hashed into the kit's manifest (the
# official parity fixtures travel in the working tree, tests/data/official, checked against
# their SHA256SUMS). Writes .device/MANIFEST.tsv and prints the size that travels. Idempotent: files already there with the locked sha256 are kept, so a
# second run downloads nothing; a file whose hash differs is downloaded again.
#
#   bash tools/device/prepare.sh                 # here, with the package index
#   bash tools/device/prepare.sh --verify-deps   # also prove the lock complete (see below)
#
# --verify-deps resolves, for Python 3.12 on manylinux x86_64, the whole dependency closure of
# mmengine, mmdet, pycocotools and mmcv's runtime requirements (read from the sdist), and fails
# if any package of it is neither in the lock nor among the packages the GPU machine already has
# (tools/device/gpu_machine_packages.txt). It reads metadata from the index, installs nothing.
# Environment: DEVICE_DIR (default .device), PYTHON (default python3; needs pip).
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=${DEVICE_DIR:-.device}
PY=${PYTHON:-python3}
KIT=("$PY" tools/device/kit.py)
LOCK=tools/device/requirements-gpu.lock
VERIFY=0
for arg in "$@"; do
  case "$arg" in
    --verify-deps) VERIFY=1 ;;
    -h|--help) sed -n 2,17p "$0"; exit 0 ;;
    *) echo "prepare.sh: unknown argument '$arg' (known: --verify-deps, --help)" >&2; exit 2 ;;
  esac
done
# The wheels must suit the GPU machine's Python (3.12, x86-64 glibc), not this machine's.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64
        --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
pip_q() { "$PY" -m pip --disable-pip-version-check -q "$@" 2>&1 | grep -v '^WARNING: Location' || true; }

mkdir -p "$ROOT/wheels" "$ROOT/sdist"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. Download what is missing or differs from the lock (pip checks the locked hashes).
"${KIT[@]}" missing --root "$ROOT" >"$tmp/missing"
if [ ! -s "$tmp/missing" ]; then
  echo "[prepare] all $(grep -cv '^\s*\(#\|$\)' "$LOCK") locked files present with their sha256: nothing to download"
else
  while read -r name version kind hash file; do
    rm -f "$ROOT/$([ "$kind" = wheel ] && echo wheels || echo sdist)/$file"
    echo "$name==$version --hash=sha256:$hash" >>"$tmp/$kind.txt"
  done <"$tmp/missing"
  if [ -s "$tmp/wheel.txt" ]; then
    echo "[prepare] downloading $(wc -l <"$tmp/wheel.txt") wheel(s) for Python 3.12 manylinux x86_64"
    pip_q download --no-deps "${TARGET[@]}" -d "$ROOT/wheels" -r "$tmp/wheel.txt"
  fi
  if [ -s "$tmp/sdist.txt" ]; then
    echo "[prepare] downloading mmcv's source distribution"
    # pip reads the sdist's metadata by running its setup.py, which imports pkg_resources:
    # setuptools 82 dropped it, so the isolated build env is held below 82.
    echo 'setuptools<82' >"$tmp/build-constraints.txt"
    PIP_CONSTRAINT="$tmp/build-constraints.txt" \
      pip_q download --no-deps --no-binary :all: -d "$ROOT/sdist" -r "$tmp/sdist.txt"
  fi
fi

# 2. Kits made before the fixtures travelled in the working tree held a copy of them.
if [ -d "$ROOT/fixtures" ]; then
  rm -rf "$ROOT/fixtures"
  echo "[prepare] removed $ROOT/fixtures: the fixtures travel in tests/data/official"
fi

# 3. Manifest, hash check of everything, size.
"${KIT[@]}" manifest --root "$ROOT" >/dev/null
if ! "${KIT[@]}" check --root "$ROOT" >"$tmp/check.json"; then
  cat "$tmp/check.json" >&2
  echo "[prepare] ERROR: $ROOT is incomplete or differs from $LOCK (details above)" >&2
  exit 1
fi
for folder in wheels sdist prebuilt; do
  [ -d "$ROOT/$folder" ] && printf '[prepare] %-9s %6s  (%s files)\n' "$folder" \
    "$(du -sh "$ROOT/$folder" | cut -f1)" "$(find "$ROOT/$folder" -type f | wc -l)"
done
"$PY" - "$tmp/check.json" <<'PY'
import json, sys
state = json.load(open(sys.argv[1]))
tree = state['tree_bytes'] or 0
print(f"[prepare] kit {state['bytes'] / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = "
      f"{(state['bytes'] + tree) / 2**20:.1f} MiB of the 64 MiB the device tool carries; "
      "manifest .device/MANIFEST.tsv")
PY

# 4. Optional: prove the lock complete for the GPU machine.
if [ "$VERIFY" = 1 ]; then
  tar -xzf "$ROOT/sdist/mmcv-2.1.0.tar.gz" -O mmcv-2.1.0/requirements/runtime.txt \
    | grep -v mmengine >"$tmp/mmcv-runtime.txt"
  echo "[prepare] resolving the dependency closure for Python 3.12 (metadata only)"
  pip_q install --dry-run --ignore-installed --report "$tmp/report.json" --target "$tmp/t" \
    "${TARGET[@]}" mmengine==0.10.7 mmdet==3.3.0 pycocotools -r "$tmp/mmcv-runtime.txt"
  [ -s "$tmp/report.json" ] || { echo "[prepare] ERROR: pip produced no resolution report" >&2; exit 1; }
  "$PY" - "$tmp/report.json" <<'PY'
import json, sys
names = sorted(f"{i['metadata']['name']}=={i['metadata']['version']}"
               for i in json.load(open(sys.argv[1]))['install'])
print(f'[prepare] closure ({len(names)}): ' + ' '.join(names))
PY
  if "${KIT[@]}" closure "$tmp/report.json"; then
    echo "[prepare] closure complete: every package is in the lock or already on the GPU machine"
  else
    echo "[prepare] ERROR: add the packages above to $LOCK" >&2
    exit 1
  fi
fi
echo "[prepare] ready: carry .device with the run (see tools/device/README.md)"

"""Build mmcv 2.1.0's CUDA ops for the GPU machine here, on a CPU machine, and check the wheel.

    bash tools/device/prebuild_mmcv.sh [--jobs N]          # venv + this script (reproduces it)
    PY312/bin/python tools/device/prebuild_mmcv.py build   [--jobs N] [--root .device]
    PY312/bin/python tools/device/prebuild_mmcv.py inspect [--root .device]

The GPU machine runs Python 3.12 with torch 2.11.0 + CUDA 13.0 and has nvcc 13.0; this machine
has the same nvcc, and PyPI's torch 2.11.0 for cp312 is that same CUDA 13.0 build. So the wheel
can be compiled here, for ``sm_90`` only, with the kit's mmcv source (``.device/sdist``, from
``prepare.sh``) and the same THC include fix the kit applies there. Nothing of it needs a GPU:
nvcc compiles device code for the named architecture without one.

``build`` unpacks (keeping an earlier tree, so an interrupted build resumes with ninja's
objects), patches, runs ``setup.py bdist_wheel`` with ``MMCV_WITH_OPS=1 FORCE_CUDA=1
TORCH_CUDA_ARCH_LIST=9.0``, writes the wheel to ``.device/prebuilt/`` atomically, then runs
``inspect``. ``inspect`` checks what a CPU machine can check and writes
``.device/prebuilt/BUILD.json``:

* symbols: the ``_ext`` library defines mmcv's MSDA entry points and CUDA launchers;
* linkage: every ``DT_NEEDED`` library is the C/C++ runtime, torch 2.11's own libraries or the
  CUDA 13 runtime (all present on the GPU machine);
* device code: ``cuobjdump --list-elf`` lists ``sm_90`` cubins;
* import: ``import mmcv._ext`` in this Python 3.12 with torch 2.11 (no GPU: the library loads,
  no kernel can run).

It then rewrites the kit's ``MANIFEST.tsv`` (``kit.py manifest``), so the wheel's sha256 is
recorded there; ``cuda_check`` installs the carried wheel only when its hash matches that row.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Dict, List

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import kit  # noqa: E402  (stdlib only)
from cuda_check import MMCV, MMCV_BUILD_ENV, patch_mmcv_sources  # noqa: E402

#: What the GPU machine runs (tools/device/README.md): the wheel must match it exactly.
TARGET_PYTHON = (3, 12)
TARGET_TORCH = '2.11.0'
TARGET_CUDA = '13.0'
#: mmcv's MSDA entry points (pybind + device dispatch) and the CUDA launchers/kernels the
#: kit's CUDA tests call; demangled names as ``nm -DC`` prints them.
EXPECTED_SYMBOLS = ('ms_deform_attn_forward', 'ms_deform_attn_backward',
                    'ms_deform_attn_cuda_forward', 'ms_deform_attn_cuda_backward',
                    'ms_deformable_im2col_gpu_kernel', 'ms_deformable_col2im_gpu_kernel_gm')
#: Libraries the ``_ext`` module may need: the C/C++ runtime, torch 2.11's own libraries
#: (in the torch wheel) and the CUDA 13 runtime (nvidia-cuda-runtime, a torch dependency).
ALLOWED_NEEDED = re.compile(
    r'^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so(\.\d+)*$'
    r'|^lib(c10|c10_cuda|torch|torch_cpu|torch_cuda|torch_python)\.so$'
    r'|^libcudart\.so\.13$')


def run(cmd: List[str], **kwargs) -> str:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kwargs).stdout


def check_toolchain() -> Dict[str, str]:
    """The Python, torch and nvcc this build is for; refuses anything else by name."""
    import torch
    facts = dict(python=sys.version.split()[0], torch=torch.__version__,
                 torch_cuda=str(torch.version.cuda),
                 nvcc=run(['nvcc', '--version']).strip())
    if sys.version_info[:2] != TARGET_PYTHON:
        raise SystemExit(f'prebuild_mmcv: run me with Python {TARGET_PYTHON[0]}.{TARGET_PYTHON[1]} '
                         f'(the GPU machine\'s), not {facts["python"]}: see prebuild_mmcv.sh')
    if not torch.__version__.startswith(TARGET_TORCH) or torch.version.cuda != TARGET_CUDA:
        raise SystemExit(f'prebuild_mmcv: needs torch {TARGET_TORCH} built for CUDA {TARGET_CUDA} '
                         f'(the GPU machine\'s), found {torch.__version__} / CUDA '
                         f'{torch.version.cuda}: pip install torch=={TARGET_TORCH} (PyPI, cp312)')
    # `nvcc --version` ends with "Build cuda_13.0.r13.0/..."; the release is on the line before.
    if f'release {TARGET_CUDA},' not in facts['nvcc']:
        raise SystemExit(f'prebuild_mmcv: needs nvcc {TARGET_CUDA}, found: '
                         f'{facts["nvcc"].splitlines()[-1]}')
    return facts


def cuda_library_headers() -> List[str]:
    """Include folders of the CUDA libraries torch's wheel brings (cuBLAS, cuSPARSE, ...).

    torch's CUDA headers include cuBLAS/cuSPARSE/cuSOLVER declarations; this machine's CUDA
    toolkit has only the compiler and runtime, the pip packages torch depends on have the rest.
    """
    site = Path(sysconfig.get_paths()['purelib'])
    return sorted(str(p) for p in site.glob('nvidia/**/include') if p.is_dir())


def build(root: Path, jobs: int) -> Path:
    facts = check_toolchain()
    sdist = root / 'sdist' / f'{MMCV}.tar.gz'
    if not sdist.is_file():
        raise SystemExit(f'prebuild_mmcv: {sdist} is missing: run bash tools/device/prepare.sh')
    work = root / 'prebuild'
    src = work / MMCV
    if not (src / 'setup.py').is_file():
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter='data')
    import torch
    changed = patch_mmcv_sources(src, Path(torch.__file__).parent / 'include')
    print(f'[prebuild] THC include replaced in: {changed or "nothing (torch has it)"}', flush=True)
    env = dict(os.environ, **{**MMCV_BUILD_ENV, "MAX_JOBS": str(jobs)})
    env.setdefault('CUDA_HOME', str(Path(shutil.which('nvcc')).resolve().parents[1]))
    env['CPATH'] = os.pathsep.join(filter(None, cuda_library_headers() + [env.get('CPATH')]))
    dist = work / 'dist'
    shutil.rmtree(dist, ignore_errors=True)
    print(f'[prebuild] building {MMCV} with MAX_JOBS={jobs} on {os.cpu_count()} cores; '
          f'{" ".join(f"{k}={env[k]}" for k in MMCV_BUILD_ENV if k != "MAX_JOBS")}', flush=True)
    t0 = time.time()
    with open(work / 'build.log', 'w') as log:
        rc = subprocess.call([sys.executable, 'setup.py', 'bdist_wheel', '-d', str(dist)],
                             cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = round(time.time() - t0)
    if rc != 0:
        raise SystemExit(f'prebuild_mmcv: the build failed after {seconds} s: see '
                         f'{work / "build.log"} (rerun resumes with the objects already built)')
    wheel, = dist.glob(f'{MMCV}-cp312-cp312-*.whl')
    out_dir = root / 'prebuilt'
    out_dir.mkdir(exist_ok=True)
    tmp = out_dir / f'.{wheel.name}.part'
    shutil.copy2(wheel, tmp)
    os.replace(tmp, out_dir / wheel.name)
    facts.update(build_seconds=seconds, jobs=jobs, machine_cores=os.cpu_count())
    (work / 'facts.json').write_text(json.dumps(facts, indent=1))
    print(f'[prebuild] built in {seconds} s with {jobs} jobs', flush=True)
    return out_dir / wheel.name


def inspect_wheel(root: Path) -> Dict[str, object]:
    """Check the prebuilt wheel as far as a CPU machine can; write BUILD.json beside it."""
    wheels = sorted((root / 'prebuilt').glob(f'{MMCV}-cp312-cp312-*.whl'))
    if not wheels:
        raise SystemExit(f'prebuild_mmcv: no wheel in {root / "prebuilt"}: run build first')
    wheel = wheels[-1]
    report: Dict[str, object] = dict(wheel=wheel.name, size=wheel.stat().st_size,
                                     sha256=kit.sha256(wheel))
    facts = root / 'prebuild' / 'facts.json'
    if facts.is_file():
        report.update(json.loads(facts.read_text()))
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        ext, = Path(tmp, 'mmcv').glob('_ext*.so')
        report['ext'] = ext.name
        symbols = run(['nm', '-DC', '--defined-only', str(ext)])
        missing = [s for s in EXPECTED_SYMBOLS if s not in symbols]
        report['symbols'] = dict(expected=list(EXPECTED_SYMBOLS), missing=missing)
        problems += [f'symbol {s} not defined in {ext.name}' for s in missing]
        needed = re.findall(r'\(NEEDED\)\s+Shared library: \[([^\]]+)\]',
                            run(['readelf', '-d', str(ext)]))
        report['needed'] = needed
        problems += [f'{ext.name} needs {n}, which is neither the C/C++ runtime, torch '
                     f'{TARGET_TORCH} nor the CUDA {TARGET_CUDA} runtime'
                     for n in needed if not ALLOWED_NEEDED.match(n)]
        elves = run(['cuobjdump', '--list-elf', str(ext)])
        archs = sorted(set(re.findall(r'\.(sm_\d+[a-z]?)\.cubin', elves)))
        report['cubin_archs'] = archs
        report['cubins'] = elves.count('.cubin')
        if archs != ['sm_90']:
            problems.append(f'cubins for {archs}, expected sm_90 only')
        # Import in this Python 3.12 + torch 2.11: the CUDA build's library must load here
        # (no kernel can run without a GPU). mmcv's Python package comes from the wheel itself.
        probe = subprocess.run(
            [sys.executable, '-c', 'import torch, sys; sys.path.insert(0, sys.argv[1]); '
             'import mmcv._ext as e; print(len([n for n in dir(e) if not n.startswith("_")]), '
             'hasattr(e, "ms_deform_attn_forward"), hasattr(e, "ms_deform_attn_backward"))', tmp],
            capture_output=True, text=True)
        report['import'] = dict(rc=probe.returncode, out=probe.stdout.strip(),
                                err=probe.stderr.strip()[-2000:])
        if probe.returncode != 0 or not probe.stdout.strip().endswith('True True'):
            problems.append(f'import mmcv._ext failed here: {probe.stderr.strip()[-300:]}')
    report['problems'] = problems
    kit.write_atomic(root / 'prebuilt' / 'BUILD.json', json.dumps(report, indent=1) + '\n')
    kit.write_manifest(root)
    print(json.dumps({k: v for k, v in report.items() if k != 'import'}, indent=1))
    print(f'[prebuild] {wheel.name}: {report["size"] / 2**20:.1f} MiB, sha256 {report["sha256"]}'
          f'; {"OK" if not problems else "PROBLEMS: " + "; ".join(problems)}')
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['build', 'inspect'])
    parser.add_argument('--root', default=str(REPO / '.device'))
    parser.add_argument('--jobs', type=int, default=os.cpu_count())
    args = parser.parse_args()
    root = Path(args.root)
    if args.command == 'build':
        build(root, args.jobs)
    return 1 if inspect_wheel(root)['problems'] else 0


if __name__ == '__main__':
    sys.exit(main())

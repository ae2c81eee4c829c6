"""Build mmcv 2.1.0's CUDA ops for the GPU machine here, on a CPU machine, and check the wheel.

    bash tools/device/prebuild_mmcv.sh [--jobs N]   # kit + gpu_python.sh + build (reproduces it)
    build/gpu-py312/bin/python tools/device/prebuild_mmcv.py build   [--jobs N]
    build/gpu-py312/bin/python tools/device/prebuild_mmcv.py inspect

The GPU machine runs Python 3.12 with torch 2.11.0 + CUDA 13.0 and has nvcc 13.0; this machine
has the same nvcc, and PyPI's torch 2.11.0 for cp312 is that same CUDA 13.0 build. So the wheel
can be compiled here, for ``sm_90`` only, with the kit's mmcv source (``.device/sdist``, from
``prepare.sh``) and the same THC include fix the kit applies there. Nothing of it needs a GPU:
nvcc compiles device code for the named architecture without one.

``build`` unpacks into ``build/prebuild/`` (``--work``; outside the carried ``.device/``),
keeping an earlier tree so that an interrupted build resumes with ninja's objects, patches, runs
``setup.py bdist_wheel`` with ``MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=9.0``, strips
the host code's debug info and writes the wheel to ``.device/prebuilt/`` atomically, then runs
``inspect``. ``inspect`` checks what a CPU machine can check and writes
``.device/prebuilt/BUILD.json``:

* symbols: the ``_ext`` library exports mmcv's MSDA entry points and CUDA launchers, and its
  sm_90 device code holds the MSDA kernels for float, double and half;
* linkage: every ``DT_NEEDED`` library is the C/C++ runtime, torch 2.11's own libraries or the
  CUDA 13 runtime, each provided by a package of the GPU machine's list
  (``gpu_machine_packages.txt``), and ``ldd`` resolves them all in this environment;
* device code: ``cuobjdump --list-elf`` lists ``sm_90`` cubins;
* import: ``import mmcv.ops`` in this Python 3.12 with torch 2.11 (with the kit's mmengine): no
  GPU, so it says what loads (the library, every op's Python module, the CPU kernels: ``nms``
  runs) and what cannot (the MSDA kernel refuses CPU tensors);
* time: the compile's object-seconds and wall time from ninja's log, across resumed runs.

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
from typing import Dict, List, Tuple

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
import kit  # noqa: E402  (stdlib only)
from cuda_check import (MMCV, MMCV_BUILD_ENV, MMCV_CPU_SMOKE, cuda_toolkit,  # noqa: E402
                        mmcv_compile_env, patch_mmcv_sources)

#: What the GPU machine runs (tools/device/README.md): the wheel must match it exactly.
TARGET_PYTHON = (3, 12)
TARGET_TORCH = '2.11.0'
TARGET_CUDA = '13.0'
#: mmcv's MSDA entry points (pybind + device dispatch) and CUDA launchers: exported, as
#: ``nm -DC`` prints them.
EXPECTED_SYMBOLS = ('ms_deform_attn_forward', 'ms_deform_attn_backward',
                    'ms_deform_attn_cuda_forward', 'ms_deform_attn_cuda_backward')
#: The MSDA kernels the kit's CUDA tests run, in the device code for each dtype mmcv
#: dispatches (float, double, half; mangled ``I<type>E``), as ``cuobjdump`` lists functions.
EXPECTED_KERNELS = tuple(f'{kernel}<{dtype}>' for kernel in (
    'ms_deformable_im2col_gpu_kernel', 'ms_deformable_col2im_gpu_kernel_gm')
    for dtype in ('float', 'double', 'c10::Half'))
_MANGLED_TYPE = {'f': 'float', 'd': 'double', 'N3c104HalfE': 'c10::Half'}
#: The CUDA binary tools' pip package, for ``cuobjdump`` (the oldest 13.x on the index).
CUOBJDUMP = 'nvidia-cuda-cuobjdump==13.2.51'
#: Libraries the ``_ext`` module may need: the C/C++ runtime, torch 2.11's own libraries
#: (in the torch wheel) and the CUDA 13 runtime (nvidia-cuda-runtime, a torch dependency).
SYSTEM_LIBRARY = re.compile(
    r'^(libc|libm|libdl|librt|libpthread|libgcc_s|libstdc\+\+|ld-linux-x86-64)\.so(\.\d+)*$')
ALLOWED_NEEDED = re.compile(
    SYSTEM_LIBRARY.pattern + r'|^lib(c10|c10_cuda|torch|torch_cpu|torch_cuda|torch_python)\.so$'
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


def build(root: Path, work: Path, jobs: int) -> Path:
    facts = check_toolchain()
    sdist = root / 'sdist' / f'{MMCV}.tar.gz'
    if not sdist.is_file():
        raise SystemExit(f'prebuild_mmcv: {sdist} is missing: run bash tools/device/prepare.sh')
    work.mkdir(parents=True, exist_ok=True)
    src = work / MMCV
    if not (src / 'setup.py').is_file():
        with tarfile.open(sdist) as tar:
            tar.extractall(work, filter='data')
    import torch
    changed = patch_mmcv_sources(src, Path(torch.__file__).parent / 'include')
    print(f'[prebuild] THC include replaced in: {changed or "nothing (torch has it)"}', flush=True)
    env = mmcv_compile_env(dict(os.environ), Path(sysconfig.get_paths()['purelib']))
    env['MAX_JOBS'] = str(jobs)
    dist = work / 'dist'
    shutil.rmtree(dist, ignore_errors=True)
    print(f'[prebuild] building {MMCV} with MAX_JOBS={jobs} on {os.cpu_count()} cores; '
          f'{" ".join(f"{k}={env[k]}" for k in MMCV_BUILD_ENV if k != "MAX_JOBS")}', flush=True)
    t0 = time.time()
    with open(work / 'build.log', 'a') as log:
        rc = subprocess.call([sys.executable, 'setup.py', 'bdist_wheel', '-d', str(dist)],
                             cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)
    seconds = round(time.time() - t0)
    with open(work / 'runs.jsonl', 'a') as runs:  # one line per (resumed) run
        runs.write(json.dumps(dict(started=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(t0)),
                                   seconds=seconds, rc=rc, jobs=jobs)) + '\n')
    if rc != 0:
        raise SystemExit(f'prebuild_mmcv: the build failed after {seconds} s: see '
                         f'{work / "build.log"} (rerun resumes with the objects already built)')
    wheel, = dist.glob(f'{MMCV}-cp312-cp312-*.whl')
    out_dir = root / 'prebuilt'
    out_dir.mkdir(exist_ok=True)
    sizes = strip_debug_info(wheel, out_dir)
    facts.update(build_seconds=seconds, jobs=jobs, machine_cores=os.cpu_count(), **sizes)
    (work / 'facts.json').write_text(json.dumps(facts, indent=1))
    print(f'[prebuild] built in {seconds} s with {jobs} jobs; debug info stripped: wheel '
          f'{sizes["unstripped_wheel_size"] / 2**20:.1f} -> {sizes["stripped_wheel_size"] / 2**20:.1f}'
          f' MiB', flush=True)
    return out_dir / wheel.name


def strip_debug_info(wheel: Path, out_dir: Path) -> Dict[str, int]:
    """Copy ``wheel`` to ``out_dir`` with the host code's debug info removed from ``_ext``.

    mmcv compiles with Python's ``-g``: the library is ~110 MB, three quarters DWARF, and the
    wheel (~36 MiB) would not travel beside the kit and the working tree (64 MiB in all).
    ``strip --strip-debug`` keeps the symbol tables, the dynamic symbols and the device code
    (the ``.nv_fatbin`` section); ``wheel pack`` rewrites the RECORD hashes.
    """
    with tempfile.TemporaryDirectory() as tmp:
        run([sys.executable, '-m', 'wheel', 'unpack', '--dest', tmp, str(wheel)])
        tree, = Path(tmp).iterdir()
        ext, = tree.glob('mmcv/_ext*.so')
        before = ext.stat().st_size
        run(['strip', '--strip-debug', str(ext)])
        packed = Path(tmp) / 'packed'
        packed.mkdir()
        run([sys.executable, '-m', 'wheel', 'pack', '--dest-dir', str(packed), str(tree)])
        slim, = packed.glob('*.whl')
        part = out_dir / f'.{slim.name}.part'
        shutil.copy2(slim, part)
        os.replace(part, out_dir / slim.name)
        return dict(unstripped_ext_size=before, stripped_ext_size=ext.stat().st_size,
                    unstripped_wheel_size=wheel.stat().st_size,
                    stripped_wheel_size=(out_dir / slim.name).stat().st_size)


def ninja_times(work: Path) -> Dict[str, object]:
    """Compile time from ninja's log (it survives resumed runs; each run restarts its clock).

    Returns:
        dict: ``objects`` compiled, ``object_seconds`` (the sum of each object's compile time,
        with ``jobs`` compiles sharing the cores) and ``wall_seconds`` (per run, the time in
        which at least one compile ran, summed over the ``runs``).
    """
    logs = list((work / MMCV / 'build').glob('temp.*/.ninja_log'))
    if not logs:
        return {}
    runs: List[List[Tuple[int, int]]] = []
    seen = set()
    for line in logs[0].read_text().splitlines():
        if line.startswith('#'):
            continue
        start, end, _, output = line.split('\t')[:4]
        interval = (int(start), int(end))
        # Entries come in the order compiles finish: an earlier end means a new run's clock.
        if not runs or interval[1] < runs[-1][-1][1]:
            runs.append([])
        runs[-1].append(interval)
        seen.add(output)
    wall = 0
    for intervals in runs:
        covered_to = 0
        for start, end in sorted(intervals):
            wall += max(0, end - max(start, covered_to))
            covered_to = max(covered_to, end)
    return dict(objects=len(seen), runs=len(runs), wall_seconds=round(wall / 1000),
                object_seconds=round(sum(e - s for r in runs for s, e in r) / 1000))


def library_providers(needed: List[str]) -> Dict[str, str]:
    """Which installed distribution ships each needed library (``system`` for the C/C++
    runtime, ``None`` when none does)."""
    from importlib import metadata
    shipped: Dict[str, str] = {}
    for dist in metadata.distributions():
        for file in dist.files or []:
            if file.name in needed:
                shipped.setdefault(file.name, dist.metadata['Name'])
    return {lib: 'system' if SYSTEM_LIBRARY.match(lib) else shipped.get(lib) for lib in needed}


def check_linkage(ext: Path, report: Dict[str, object]) -> List[str]:
    needed = re.findall(r'\(NEEDED\)\s+Shared library: \[([^\]]+)\]',
                        run(['readelf', '-d', str(ext)]))
    providers = library_providers(needed)
    report['needed'] = providers
    on_machine = kit.machine_packages()
    problems = [f'{ext.name} needs {lib}, which is neither the C/C++ runtime, torch '
                f'{TARGET_TORCH} nor the CUDA {TARGET_CUDA} runtime'
                for lib in needed if not ALLOWED_NEEDED.match(lib)]
    problems += [f'{ext.name} needs {lib}, shipped by {dist or "no installed package"}, which '
                 'the GPU machine does not list (gpu_machine_packages.txt)'
                 for lib, dist in providers.items()
                 if dist != 'system' and (dist is None or kit.normalize(dist) not in on_machine)]
    # ldd with the providers' folders, as torch's import makes them available there.
    site = Path(sysconfig.get_paths()['purelib'])
    folders = sorted({str(p.parent) for lib in needed for p in site.glob(f'**/{lib}')})
    ldd = subprocess.run(['ldd', str(ext)], capture_output=True, text=True,
                         env=dict(os.environ, LD_LIBRARY_PATH=os.pathsep.join(folders)))
    unresolved = [line.split()[0] for line in ldd.stdout.splitlines() if 'not found' in line]
    report['ldd_unresolved'] = unresolved
    problems += [f'ldd cannot resolve {lib} for {ext.name}' for lib in unresolved]
    return problems


#: Run in this Python 3.12 + torch 2.11 with the unpacked wheel and the kit's mmengine first on
#: the path: what of a CUDA build of mmcv works without a GPU (the rehearsal's CPU smoke test,
#: which asserts the CPU nms, then what loads and what refuses).
IMPORT_PROBE = r"""
import json, sys
sys.path[:0] = sys.argv[1:3]
""" + MMCV_CPU_SMOKE + r"""
found = dict(mmcv=mmcv.__version__, mmcv_file=mmcv.__file__, torch=torch.__version__,
             cuda_available=torch.cuda.is_available(),
             ext_functions=len([n for n in dir(mmcv._ext) if not n.startswith('_')]),
             ops_exported=len(mmcv.ops.__all__),
             msda_entry_points=[hasattr(mmcv._ext, n) for n in ('ms_deform_attn_forward',
                                                                'ms_deform_attn_backward')],
             nms_cpu_keep=keep.tolist())
ext = mmcv._ext
shapes = torch.tensor([[2, 2]])
try:
    ext.ms_deform_attn_forward(torch.zeros(1, 4, 1, 2), shapes, torch.zeros(1, dtype=torch.long),
                               torch.zeros(1, 1, 1, 1, 1, 2), torch.ones(1, 1, 1, 1, 1),
                               im2col_step=64)
    found['msda_on_cpu'] = 'ran'
except RuntimeError as exc:
    found['msda_on_cpu'] = str(exc).strip().splitlines()[0]
print('PROBE ' + json.dumps(found))
"""


def probe_import(root: Path, unpacked: str, report: Dict[str, object]) -> List[str]:
    """``import mmcv.ops`` here, with the kit's wheels (mmengine & co.) installed beside it."""
    with tempfile.TemporaryDirectory() as deps:
        wheels = sorted(str(p) for p in (root / 'wheels').glob('*.whl')
                        if not p.name.startswith('setuptools-'))
        if not wheels:
            return [f'no kit wheels in {root / "wheels"} for the import check: run prepare.sh']
        subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-index', '--no-deps',
                        '--disable-pip-version-check', '-q', '--target', deps, *wheels],
                       check=True, capture_output=True)
        probe = subprocess.run([sys.executable, '-c', IMPORT_PROBE, unpacked, deps],
                               capture_output=True, text=True)
    match = re.search(r'^PROBE (.*)$', probe.stdout, re.M)
    found = json.loads(match.group(1)) if match else {}
    report['import'] = dict(rc=probe.returncode, **found, err=probe.stderr.strip()[-1500:])
    if not match:
        return [f'import mmcv.ops failed here: {probe.stderr.strip()[-300:]}']
    problems = []
    if not found['mmcv_file'].startswith(unpacked):
        problems.append(f'the probe imported {found["mmcv_file"]}, not the wheel\'s mmcv')
    if found['msda_entry_points'] != [True, True]:
        problems.append('mmcv._ext lacks ms_deform_attn_forward/backward')
    return problems


def msda_kernels(resource_usage: str) -> set:
    """MSDA kernels named in ``cuobjdump --dump-resource-usage`` output, demangled as
    ``name<type>`` for the types mmcv dispatches."""
    return {f'{name}<{_MANGLED_TYPE[t]}>' for name, t in re.findall(
        r'_Z\d+(ms_deformable_\w+?)I(f|d|N3c104HalfE)E', resource_usage)}


def find_cuobjdump(work: Path) -> str:
    """cuobjdump from PATH, nvcc's toolkit, or the pip package prebuild_mmcv.sh installs into
    ``WORK/tools`` (this machine's toolkit is the compiler only)."""
    candidates = [shutil.which('cuobjdump'), cuda_toolkit() / 'bin' / 'cuobjdump',
                  *sorted((work / 'tools').glob('nvidia/*/bin/cuobjdump'))]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return str(candidate)
    raise SystemExit(f'prebuild_mmcv: no cuobjdump: pip install --target {work / "tools"} '
                     f'{CUOBJDUMP} (prebuild_mmcv.sh does)')


def inspect_wheel(root: Path, work: Path) -> Dict[str, object]:
    """Check the prebuilt wheel as far as a CPU machine can; write BUILD.json beside it."""
    wheels = sorted((root / 'prebuilt').glob(f'{MMCV}-cp312-cp312-*.whl'))
    if not wheels:
        raise SystemExit(f'prebuild_mmcv: no wheel in {root / "prebuilt"}: run build first')
    wheel = wheels[-1]
    report: Dict[str, object] = dict(wheel=wheel.name, size=wheel.stat().st_size,
                                     sha256=kit.sha256(wheel))
    facts = work / 'facts.json'
    if facts.is_file():
        report.update(json.loads(facts.read_text()))
    report['compile'] = ninja_times(work)
    problems = []
    with tempfile.TemporaryDirectory() as tmp:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(tmp)
        ext, = Path(tmp, 'mmcv').glob('_ext*.so')
        report['ext'] = ext.name
        report['ext_size'] = ext.stat().st_size
        symbols = run(['nm', '-DC', '--defined-only', str(ext)])
        missing = [s for s in EXPECTED_SYMBOLS if s not in symbols]
        report['symbols'] = dict(expected=list(EXPECTED_SYMBOLS), missing=missing)
        problems += [f'symbol {s} not defined in {ext.name}' for s in missing]
        problems += check_linkage(ext, report)
        cuobjdump = find_cuobjdump(work)
        elves = run([cuobjdump, '--list-elf', str(ext)])
        archs = sorted(set(re.findall(r'\.(sm_\d+[a-z]?)\.cubin', elves)))
        report['cubin_archs'] = archs
        report['cubins'] = elves.count('.cubin')
        if archs != ['sm_90']:
            problems.append(f'cubins for {archs}, expected sm_90 only')
        kernels = msda_kernels(run([cuobjdump, '--dump-resource-usage', str(ext)]))
        missing = [k for k in EXPECTED_KERNELS if k not in kernels]
        report['kernels'] = dict(expected=list(EXPECTED_KERNELS), missing=missing)
        problems += [f'kernel {k} not in the device code of {ext.name}' for k in missing]
        problems += probe_import(root, tmp, report)
    report['problems'] = problems
    kit.write_atomic(root / 'prebuilt' / 'BUILD.json', json.dumps(report, indent=1) + '\n')
    kit.write_manifest(root)
    print(json.dumps({k: v for k, v in report.items() if k not in ('import', 'nvcc')}, indent=1))
    print('[prebuild] import here: ' + json.dumps({k: v for k, v in report['import'].items()
                                                    if k != 'err'}))
    compile_ = report['compile']
    print(f'[prebuild] {wheel.name}: {report["size"] / 2**20:.1f} MiB, sha256 {report["sha256"]}'
          + (f'; compiled {compile_["objects"]} objects in {compile_["wall_seconds"]} s wall '
             f'({compile_["object_seconds"]} object-s) over {compile_["runs"]} run(s)'
             if compile_ else '')
          + f'; {"OK" if not problems else "PROBLEMS: " + "; ".join(problems)}')
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('command', choices=['build', 'inspect'])
    parser.add_argument('--root', default=str(REPO / '.device'),
                        help='the kit folder: the wheel goes to ROOT/prebuilt')
    parser.add_argument('--work', default=str(REPO / 'build' / 'prebuild'),
                        help='build tree, log and timings (not carried)')
    parser.add_argument('--jobs', type=int, default=os.cpu_count())
    args = parser.parse_args()
    # Absolute: setup.py runs in the source tree (a relative -d put the wheel inside it).
    root, work = Path(args.root).resolve(), Path(args.work).resolve()
    if args.command == 'build':
        build(root, work, args.jobs)
    return 1 if inspect_wheel(root, work)['problems'] else 0


if __name__ == '__main__':
    sys.exit(main())

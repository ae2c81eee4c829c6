"""The CUDA proof in one call: install the kit offline, build mmcv's CUDA ops, test, benchmark.

    bash tools/device/cuda_check.sh OUTDIR [--dry-run | --rehearse] [--budget S] [--stages a,b]

Runs from the repository root on the GPU machine (Python 3.12, torch 2.11 + CUDA 13, no index)
with ``.device/`` prepared by ``tools/device/prepare.sh`` and carried along. Each stage runs as
a subprocess with its own log and a time limit cut to what is left of ``--budget``; a failed
stage does not stop the stages after it that do not depend on it, and every stage prints its
elapsed time. After each stage ``OUTDIR/summary.json`` and ``OUTDIR/logs.tar.gz`` are rewritten
(atomically), so even a run killed from outside leaves what it had. ``OUTDIR`` receives at most
five files (the device tool returns eight): ``summary.json``, ``logs.tar.gz``, ``bench.txt`` and
the mmcv wheel built here (split into ``.partN`` files above 15 MiB).

Work files (the installed packages, mmcv's build tree, logs) go to ``build/device/`` (ignored),
outside the carried ``.device/``: a second call on the same, still warm machine finds the built
mmcv wheel and ninja's object files there. On a fresh machine the mmcv stage installs the wheel
carried in ``.device/prebuilt/`` (``prebuild_mmcv.py``) instead of compiling, when its sha256
matches ``.device/MANIFEST.tsv`` and its ``BUILD.json`` lists no problems; otherwise it says
which file failed which check and compiles (see tools/device/README.md).

``--dry-run`` (CPU, any Python with this repo's environment) does every step that needs no
GPU: kit check (``not-prepared`` is reported, not failed, when ``.device/`` is absent), wheel
tags resolvable for Python 3.12, mmcv source patch check, imports, ``pytest -m cuda
--collect-only``, the parity tool's ``--device`` option, a 1-iteration CPU benchmark and the
summary.

``--rehearse`` (CPU, with the GPU machine's Python and torch: ``tools/device/rehearse.sh``) runs
the GPU run's own code on this machine: the offline install into ``build/device/site``, the
prebuilt wheel's gate and install (it never compiles: that takes hours here), the imports, and
every CUDA test with the CPU in the GPU's place (``MMDET_DDETR_CUDA_TEST_DEVICE=cpu``: tests that
need a real GPU skip themselves; the AMP training steps are deselected, minutes each here).
mmcv's CUDA smoke test becomes a CPU one (``import mmcv.ops``, ``nms``), the benchmark runs a
small CPU case and mmdet's ``benchmark.py`` (hard-coded ``.cuda()``) is skipped. Stage caps are
multiplied by ``REHEARSAL_CAP_FACTOR`` (2 shared cores in place of 16 and a GPU).
"""
import argparse
import glob
import json
import os
import os.path as osp
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import kit  # noqa: E402  (tools/device/kit.py, stdlib only)

KIT = REPO / '.device'
WORK = REPO / 'build' / 'device'
SITE = WORK / 'site'
DIST = WORK / 'dist'
LOGS = WORK / 'logs'
MMCV = 'mmcv-2.1.0'
#: The device tool returns files up to 16 MiB; bigger wheels travel in parts.
PART_BYTES = 15 * 2**20
#: mmcv's build: ops with CUDA, Hopper only (the one card there), one job per core.
MMCV_BUILD_ENV = dict(MMCV_WITH_OPS='1', FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST='9.0',
                      MAX_JOBS='16')
#: Seconds each stage may take at most; the budget cuts them further.
CAPS = {'env': 30, 'kit': 30, 'install': 60, 'mmcv': 480, 'import': 60, 'tests-msda': 120,
        'parity': 120, 'tests-models': 180, 'bench': 240, 'runner': 150, 'mmdet-bench': 90}
#: A rehearsal runs on 2 shared CPU cores: its stages get this many times the GPU caps.
REHEARSAL_CAP_FACTOR = 4
#: Stages that cannot run when one of these failed (a failure upstream says it all).
NEEDS = {'install': ['kit'], 'mmcv': ['install'], 'import': ['mmcv'],
         'tests-msda': ['import'], 'parity': ['import'], 'tests-models': ['import'],
         'runner': ['import'], 'bench': ['import'], 'mmdet-bench': ['import']}
ORDER = list(CAPS)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog='cuda_check.sh', description=__doc__.split('\n\n')[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('outdir', help='folder for summary.json, logs.tar.gz, bench.txt and '
                        'the built mmcv wheel (e.g. $OUT of the device tool)')
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument('--dry-run', action='store_true',
                      help='CPU check of every step that needs no GPU, in any Python')
    mode.add_argument('--rehearse', action='store_true',
                      help="the GPU run on this CPU, with the GPU machine's Python 3.12 and "
                      'torch 2.11 (tools/device/rehearse.sh): real install, CUDA tests on CPU')
    parser.add_argument('--budget', type=float, default=560,
                        help='seconds for the whole run (default 560: inside the device '
                        "tool's 10 minutes per command, with time to pack the results)")
    parser.add_argument('--stages', default=','.join(ORDER),
                        help='comma-separated stages to run (with the stages they need), '
                        'always in this order: ' + ','.join(ORDER))
    parser.add_argument('--bench-iters', type=int, default=6)
    parser.add_argument('--bench-warmup', type=int, default=2)
    args = parser.parse_args(argv)
    wanted = {s.strip() for s in args.stages.split(',') if s.strip()}
    unknown = sorted(wanted - set(ORDER))
    if unknown:
        parser.error(f'unknown stage(s) {unknown}; known: {ORDER}')
    # A stage brings the stages it needs (e.g. --stages bench also installs and imports);
    # env, which records the machine, always runs.
    wanted.add('env')
    todo = list(wanted)
    while todo:
        for need in NEEDS.get(todo.pop(), []):
            if need not in wanted:
                wanted.add(need)
                todo.append(need)
    args.stages = [s for s in ORDER if s in wanted]
    if args.budget < 30:
        parser.error('--budget must be >= 30 seconds')
    return args


class Run:
    """Stage bookkeeping: logs, time limits, summary and the packed results."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.dry = args.dry_run
        self.rehearse = args.rehearse
        #: a real run on the GPU machine (neither dry nor rehearsed)
        self.gpu = not (self.dry or self.rehearse)
        self.outdir = Path(args.outdir).resolve()
        self.outdir.mkdir(parents=True, exist_ok=True)
        self.start = time.time()
        self.deadline = self.start + args.budget
        self.logs = LOGS if not self.dry else Path(tempfile.mkdtemp(prefix='cuda_check_'))
        shutil.rmtree(self.logs, ignore_errors=True)
        self.logs.mkdir(parents=True)
        self.stages: List[Dict] = []
        self.facts: Dict[str, object] = dict(
            mode='dry-run' if self.dry else 'rehearsal' if self.rehearse else 'gpu')
        self.python = sys.executable

    # ---------------------------------------------------------------- environment
    def env(self) -> Dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO)]
        if not self.dry:
            paths.append(str(SITE))
        if env.get('PYTHONPATH'):
            paths.append(env['PYTHONPATH'])
        env['PYTHONPATH'] = os.pathsep.join(paths)
        env['PYTHONUNBUFFERED'] = '1'
        env['PYTHONHASHSEED'] = '0'
        env['MMDET_DDETR_CUDA_REPORT'] = str(self.logs / 'measured.jsonl')
        if self.dry:
            env.setdefault('OMP_NUM_THREADS', '1')
        if not self.gpu:
            env['CUDA_VISIBLE_DEVICES'] = ''  # a CPU run must not touch a GPU, even if present
        if self.rehearse:
            env['MMDET_DDETR_CUDA_TEST_DEVICE'] = 'cpu'  # the CUDA tests, the CPU in its place
        return env

    def left(self) -> float:
        return self.deadline - time.time()

    # ---------------------------------------------------------------- stage running
    def sh(self, name: str, cmd: List[str], log, timeout: float, env=None, cwd=REPO) -> int:
        """Run ``cmd`` with output to ``log``; raise ``TimeoutError`` past ``timeout``."""
        log.write(f'$ {" ".join(shlex.quote(str(c)) for c in cmd)}\n')
        log.flush()
        proc = subprocess.Popen([str(c) for c in cmd], cwd=cwd, env=env or self.env(),
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            return proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 15)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()
            raise TimeoutError(f'{name}: stopped after {timeout:.0f} s')

    def stage(self, name: str, body: Callable[['Run', object, float], Optional[str]]) -> None:
        if name not in self.args.stages:
            return
        # On the GPU a skipped prerequisite blocks too; in a dry run a stage that had nothing
        # to do (e.g. no kit on a fresh clone) leaves the later stages their CPU checks.
        blocking = ('failed', 'timeout') if self.dry else ('failed', 'timeout', 'skipped')
        blocked = [n for n in NEEDS.get(name, []) if self.status(n) in blocking]
        record = dict(name=name, status='skipped', seconds=0.0, log=f'logs/{name}.log',
                      detail='')
        limit = min(CAPS[name] * (REHEARSAL_CAP_FACTOR if self.rehearse else 1),
                    self.left() - 10)
        if blocked:
            record['detail'] = f'needs {", ".join(blocked)}'
        elif limit < 5:
            record['detail'] = 'no time left in --budget'
        else:
            t0 = time.time()
            print(f'[cuda_check] {name} ... (limit {limit:.0f} s)', flush=True)
            with open(self.logs / f'{name}.log', 'w') as log:
                try:
                    detail = body(self, log, limit)
                    record['status'] = 'ok'
                    record['detail'] = detail or ''
                except Skip as exc:
                    record['detail'] = str(exc)
                except TimeoutError as exc:
                    record['status'], record['detail'] = 'timeout', str(exc)
                except Exception as exc:  # noqa: BLE001  (reported in the summary)
                    record['status'], record['detail'] = 'failed', f'{exc}'
                    log.write(f'\n[cuda_check] FAILED: {exc!r}\n')
            record['seconds'] = round(time.time() - t0, 1)
        self.stages.append(record)
        print(f'[cuda_check] {name}: {record["status"]} in {record["seconds"]:.1f} s'
              + (f' -- {record["detail"]}' if record['detail'] else ''), flush=True)
        self.write()

    def status(self, name: str) -> Optional[str]:
        for record in self.stages:
            if record['name'] == name:
                return record['status']
        return None

    # ---------------------------------------------------------------- results
    def write(self) -> None:
        failed = [s['name'] for s in self.stages if s['status'] in ('failed', 'timeout')]
        summary = dict(self.facts, started=time.strftime('%Y-%m-%dT%H:%M:%SZ',
                                                          time.gmtime(self.start)),
                       elapsed_s=round(time.time() - self.start, 1),
                       budget_s=self.args.budget, stages=self.stages, failed=failed,
                       ok=not failed)
        kit.write_atomic(self.outdir / 'summary.json', json.dumps(summary, indent=1) + '\n')
        tmp = self.outdir / '.logs.tar.gz.tmp'
        with tarfile.open(tmp, 'w:gz') as tar:
            tar.add(self.logs, arcname='logs')
        os.replace(tmp, self.outdir / 'logs.tar.gz')


class Skip(Exception):
    """A stage that has nothing to do here (reported as skipped, not failed)."""


def check(condition: bool, message: str) -> None:
    if not condition:
        raise RuntimeError(message)


def py(run: Run, log, timeout: float, code: str, *args: str) -> None:
    check(run.sh('python', [run.python, '-c', code, *args], log, timeout) == 0,
          'see the log')


# ==================================================================== stages
def stage_env(run: Run, log, limit: float) -> str:
    code = ('import json, os, platform, sys, torch\n'
            'info = dict(python=platform.python_version(), torch=torch.__version__,\n'
            '            cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),\n'
            '            cpus=os.cpu_count())\n'
            'if info["cuda_available"]:\n'
            '    p = torch.cuda.get_device_properties(0)\n'
            '    info.update(gpu=p.name, capability=f"{p.major}.{p.minor}",\n'
            '                gpu_mem_gib=round(p.total_memory / 2**30, 1))\n'
            'print("ENV " + json.dumps(info))\n')
    run.sh('env', [run.python, '-c', code], log, limit)
    if run.gpu:
        for cmd in (['nvidia-smi'], ['nvcc', '--version'], [run.python, '-m', 'pip', 'list']):
            if shutil.which(cmd[0]) or cmd[0] == run.python:
                run.sh('env', cmd, log, limit)
    log.flush()
    text = (run.logs / 'env.log').read_text()
    match = re.search(r'^ENV (.*)$', text, re.M)
    check(match is not None, 'could not read the environment: '
          + (text.strip().splitlines() or [''])[-1])
    info = json.loads(match.group(1))
    run.facts['machine'] = info
    if run.gpu:
        check(info['cuda_available'], 'torch sees no CUDA device')
    if run.rehearse:
        check(info['python'].startswith('3.12.') and info['torch'].startswith('2.11.0'),
              f"a rehearsal needs the GPU machine's Python 3.12 and torch 2.11.0, not "
              f"{info['python']} and {info['torch']}: run tools/device/rehearse.sh")
    return ', '.join(f'{k}={v}' for k, v in info.items())


def stage_kit(run: Run, log, limit: float) -> str:
    state = kit.check(KIT)
    log.write(json.dumps(state, indent=1) + '\n')
    run.facts['kit'] = state['status']
    if state['status'] == 'not-prepared':
        if run.dry:
            # CI runs on a fresh clone where prepare.sh (which needs the index) has not run.
            raise Skip(state['message'])
        raise RuntimeError(state['message'])
    check(state['status'] == 'ok', '; '.join(state['errors']))
    run.facts['prebuilt'] = state['prebuilt']
    return f'{len(kit.read_lock())} locked files and {len(state["fixtures"])} fixtures ' \
           f'verified, {state["bytes"] / 1e6:.1f} MB; prebuilt mmcv: ' \
           f'{state["prebuilt"]["status"]}'


def stage_install(run: Run, log, limit: float) -> str:
    wheels = sorted(glob.glob(str(KIT / 'wheels' / '*.whl')))
    if run.dry and not wheels:
        raise Skip('no wheels in .device/wheels (kit not prepared)')
    pip = [run.python, '-m', 'pip', 'install', '--no-index', '--no-deps', '--no-compile',
           '--disable-pip-version-check']
    if run.dry:
        # Prove the wheels' tags install on the GPU machine's Python (3.12, manylinux x86-64).
        with tempfile.TemporaryDirectory() as target:
            cmd = pip + ['--dry-run', '--target', target, '--only-binary=:all:',
                         '--python-version', '3.12', '--implementation', 'cp',
                         '--platform', 'manylinux_2_28_x86_64', '--platform',
                         'manylinux_2_24_x86_64', '--platform', 'manylinux_2_17_x86_64',
                         *wheels]
            check(run.sh('install', cmd, log, limit) == 0, 'wheels not installable on 3.12')
        return f'{len(wheels)} wheels resolve for Python 3.12 manylinux x86-64 (dry run)'
    shutil.rmtree(SITE, ignore_errors=True)
    check(run.sh('install', pip + ['--target', str(SITE), *wheels], log, limit) == 0,
          'pip install of the kit failed')
    return f'{len(wheels)} wheels -> {SITE.relative_to(REPO)}'


def patch_mmcv_sources(src: Path, torch_include: Path) -> List[str]:
    """Make mmcv 2.1.0's CUDA sources build against a torch without the THC headers.

    mmcv 2.1.0 includes ``THC/THCAtomics.cuh`` in two places; newer torch releases ship only
    its successor ``ATen/cuda/Atomic.cuh`` (what that header forwarded to). The include is
    replaced only when the installed torch lacks the old header.

    Returns:
        list[str]: The files changed (empty when torch still has the header).
    """
    if (torch_include / 'THC' / 'THCAtomics.cuh').is_file():
        return []
    changed = []
    for rel in ('mmcv/ops/csrc/common/pytorch_cuda_helper.hpp',
                'mmcv/ops/csrc/pytorch/cuda/ms_deform_attn_cuda.cu'):
        path = src / rel
        text = path.read_text()
        new = text.replace('#include <THC/THCAtomics.cuh>', '#include <ATen/cuda/Atomic.cuh>')
        if new != text:
            path.write_text(new)
            changed.append(rel)
    return changed


def cuda_toolkit(nvcc: str = 'nvcc') -> Path:
    """The CUDA toolkit that ``nvcc`` belongs to, as nvcc itself reports it (``TOP``).

    torch takes ``CUDA_HOME`` from the folder above ``which nvcc``; where ``nvcc`` is a wrapper
    script (on these machines ``/usr/local/bin/nvcc`` runs ``/usr/local/cuda-13.0/bin/nvcc``)
    that is ``/usr/local``, with no CUDA headers: nvcc still finds its own, but the ``.cpp``
    files that include ``cuda_runtime_api.h`` (compiled by ``c++``) do not.
    """
    out = subprocess.run([nvcc, '--dryrun', '-x', 'cu', '-c', os.devnull, '-o', os.devnull],
                         capture_output=True, text=True)
    top = re.search(r'^#\$ TOP=(.+)$', out.stdout + out.stderr, re.M)
    check(top is not None, f'`{nvcc} --dryrun` does not say where its toolkit is')
    return Path(top.group(1).strip()).resolve()


def mmcv_compile_env(env: Dict[str, str], site_packages: Path) -> Dict[str, str]:
    """``env`` for compiling mmcv's CUDA ops against this Python's torch, whatever the
    ``CUDA_HOME`` torch infers: the toolkit's headers and libraries first (see
    :func:`cuda_toolkit`), then the headers of the CUDA libraries torch's wheel brings
    (cuBLAS, cuSPARSE, ...: torch's CUDA headers include them; a compiler-and-runtime toolkit
    lacks them). Only search paths change, never the compile commands, so ninja resumes an
    interrupted build with the objects it has."""
    toolkit = cuda_toolkit()
    library_headers = sorted(str(p) for p in site_packages.glob('nvidia/**/include') if p.is_dir())
    env = dict(env, **MMCV_BUILD_ENV)
    env['CPATH'] = os.pathsep.join(filter(None, [str(toolkit / 'include'), *library_headers,
                                                 env.get('CPATH')]))
    env['LIBRARY_PATH'] = os.pathsep.join(filter(None, [str(toolkit / 'lib64'),
                                                        env.get('LIBRARY_PATH')]))
    return env


def find_prebuilt(run: Run) -> List[Path]:
    """mmcv wheels built earlier on this machine for this Python: output and work folders.

    (The carried ``.device/prebuilt/`` wheel goes through :func:`mmcv_plan`, hash-checked.)"""
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    found = []
    for folder in (run.outdir, DIST):
        for parts in sorted(folder.glob(f'{MMCV}-{tag}-*.whl.part1')):
            whole = DIST / parts.name[:-len('.part1')]
            DIST.mkdir(parents=True, exist_ok=True)
            with open(whole, 'wb') as out:
                for part in sorted(folder.glob(parts.name[:-1] + '*'),
                                   key=lambda p: int(p.name.rsplit('part', 1)[1])):
                    out.write(part.read_bytes())
            found.append(whole)
        found += sorted(folder.glob(f'{MMCV}-{tag}-*.whl'))
    return found


MMCV_SMOKE = '''
import torch, mmcv, mmcv._ext
from mmcv.ops.multi_scale_deform_attn import (MultiScaleDeformableAttnFunction,
                                              multi_scale_deformable_attn_pytorch)
assert mmcv.__version__ == '2.1.0', mmcv.__version__
shapes = torch.tensor([[6, 8], [3, 4]], device='cuda')
start = torch.cat([shapes.new_zeros(1), (shapes[:, 0] * shapes[:, 1]).cumsum(0)[:-1]])
value = torch.randn(2, 60, 2, 4, device='cuda', dtype=torch.float64)
loc = torch.rand(2, 5, 2, 2, 3, 2, device='cuda', dtype=torch.float64)
w = torch.rand(2, 5, 2, 2, 3, device='cuda', dtype=torch.float64).softmax(-1)
out = MultiScaleDeformableAttnFunction.apply(value, shapes, start, loc, w, 2)
ref = multi_scale_deformable_attn_pytorch(value, shapes, loc, w)
err = (out - ref).abs().max().item()
assert err < 1e-10, err
print(f'mmcv {mmcv.__version__} CUDA kernel vs PyTorch path, float64: max diff {err:.1e}')
'''


PIP_INSTALL = ['-m', 'pip', 'install', '--no-index', '--no-deps', '--no-compile',
               '--disable-pip-version-check']


def mmcv_plan(python: str, kit_root: Optional[Path] = None,
              site: Optional[Path] = None) -> Dict[str, object]:
    """How the mmcv stage gets mmcv: ``install-prebuilt`` (the carried wheel passed
    :func:`kit.prebuilt_state`: sha256 as in MANIFEST.tsv, BUILD.json clean) or ``compile``.

    Returns:
        dict: ``action``, ``cmd`` (what runs), ``prebuilt`` (the wheel's state: absent, ok,
        mismatch, problems) and ``message`` (which file, and why it is or is not used).
    """
    state = kit.prebuilt_state(KIT if kit_root is None else kit_root)
    if state['status'] == 'ok':
        cmd = [python, *PIP_INSTALL, '--target', str(SITE if site is None else site),
               '--upgrade', state['wheel']]
        return dict(action='install-prebuilt', cmd=cmd, prebuilt='ok', wheel=state['wheel'],
                    message=state['message'])
    return dict(action='compile', cmd=mmcv_build_cmd(python), prebuilt=state['status'],
                message=state['message'])


def mmcv_build_cmd(python: str) -> List[str]:
    """mmcv's build, run in its unpacked source (``MMCV_BUILD_ENV`` set)."""
    return [python, 'setup.py', '-q', 'bdist_wheel', '-d', str(DIST)]


def dry_run_mmcv(run: Run, log, limit: float, plan: Dict[str, object]) -> str:
    """The mmcv stage's CPU checks: the prebuilt wheel's tags, else the sdist and its patch."""
    if plan['action'] == 'install-prebuilt':
        # Prove pip accepts the wheel's tags for the GPU machine's Python (3.12, x86-64).
        with tempfile.TemporaryDirectory() as target:
            cmd = [run.python, *PIP_INSTALL, '--dry-run', '--target', target,
                   '--only-binary=:all:', '--python-version', '3.12', '--implementation', 'cp',
                   '--platform', 'linux_x86_64', '--platform', 'manylinux_2_28_x86_64',
                   '--platform', 'manylinux_2_17_x86_64', plan['wheel']]
            check(run.sh('mmcv', cmd, log, limit) == 0,
                  f'{Path(plan["wheel"]).name} is not installable on Python 3.12 x86-64')
        return (f'would install {Path(plan["wheel"]).name} (sha256 matches MANIFEST.tsv, '
                'BUILD.json clean, installable on 3.12): no build')
    sdist = KIT / 'sdist' / f'{MMCV}.tar.gz'
    if not sdist.is_file():
        raise Skip(f'{sdist.relative_to(REPO)} absent (kit not prepared)')
    with tempfile.TemporaryDirectory() as tmp:
        with tarfile.open(sdist) as tar:
            tar.extractall(tmp, filter='data')
        changed = patch_mmcv_sources(Path(tmp) / MMCV, Path(tmp) / 'no-torch-headers')
        check(len(changed) == 2, f'the THC patch no longer applies: changed {changed}')
    py(run, log, limit, 'import mmcv, mmcv._ext; print("mmcv", mmcv.__version__)')
    return (('' if plan['prebuilt'] == 'absent' else f'{plan["message"]}; ')
            + 'sdist unpacks, THC include patch applies to 2 files; build skipped: '
            + ' '.join(f'{k}={v}' for k, v in MMCV_BUILD_ENV.items()))


MMCV_CPU_SMOKE = '''
import torch, mmcv, mmcv._ext, mmcv.ops
assert mmcv.__version__ == '2.1.0', mmcv.__version__
boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 11., 11.], [20., 20., 30., 30.]])
_, keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), 0.5)
assert keep.tolist() == [0, 2], keep
print(f'mmcv {mmcv.__version__} from {mmcv.__file__}: mmcv.ops imports, its CPU nms runs')
'''


def rehearse_mmcv(run: Run, log, limit: float, plan: Dict[str, object]) -> str:
    """The GPU run's install of the prebuilt wheel, then a CPU smoke test in its place."""
    check(plan['action'] == 'install-prebuilt',
          f'a rehearsal installs the prebuilt wheel and never compiles (hours here): '
          f'{plan["message"]}')
    t0 = time.time()
    check(run.sh('mmcv', plan['cmd'], log, limit) == 0, 'installing the prebuilt wheel failed')
    check(run.sh('mmcv', [run.python, '-c', MMCV_CPU_SMOKE], log, limit) == 0,
          'the prebuilt mmcv fails its CPU smoke test (logs/mmcv.log)')
    return (f'prebuilt {Path(plan["wheel"]).name} installed and CPU-smoke-tested in '
            f'{time.time() - t0:.0f} s (sha256 verified; the CUDA smoke test needs a GPU)')


def stage_mmcv(run: Run, log, limit: float) -> str:
    plan = mmcv_plan(run.python)
    run.facts['mmcv_plan'] = {k: str(v) for k, v in plan.items() if k != 'cmd'}
    log.write(f'[cuda_check] mmcv: {plan["action"]}: {plan["message"]}\n')
    if plan['prebuilt'] != 'absent':
        print(f'[cuda_check] mmcv: {plan["message"]}', flush=True)
    if run.dry:
        return dry_run_mmcv(run, log, limit, plan)
    if run.rehearse:
        return rehearse_mmcv(run, log, limit, plan)
    sdist = KIT / 'sdist' / f'{MMCV}.tar.gz'
    pip = [run.python, *PIP_INSTALL, '--target', str(SITE), '--upgrade']
    if plan['action'] == 'install-prebuilt':
        t0 = time.time()
        if run.sh('mmcv', plan['cmd'], log, limit) == 0 and \
                run.sh('mmcv', [run.python, '-c', MMCV_SMOKE], log, limit) == 0:
            run.facts['mmcv_build_s'] = None
            return (f'prebuilt {Path(plan["wheel"]).name} installed and smoke-tested in '
                    f'{time.time() - t0:.0f} s (sha256 verified, no build)')
        log.write('[cuda_check] the verified prebuilt wheel fails here: compiling\n')
        print('[cuda_check] mmcv: the prebuilt wheel failed to install or its CUDA smoke '
              'test (logs/mmcv.log): compiling', flush=True)
    check(sdist.is_file(), f'{sdist} is missing: cannot compile mmcv (run prepare.sh)')
    for wheel in find_prebuilt(run):
        log.write(f'[cuda_check] trying the prebuilt {wheel}\n')
        if run.sh('mmcv', pip + [str(wheel)], log, limit) == 0 and \
                run.sh('mmcv', [run.python, '-c', MMCV_SMOKE], log, limit) == 0:
            run.facts['mmcv_build_s'] = None
            save_wheel(run, wheel)
            return f'prebuilt {wheel.name} reused (no build)'
        log.write('[cuda_check] it does not work with this torch: building\n')
    # Build. An earlier, interrupted tree is kept: ninja then compiles only what is left.
    src = WORK / 'src' / MMCV
    if not (src / 'setup.py').is_file():
        with tarfile.open(sdist) as tar:
            tar.extractall(src.parent, filter='data')
    probe = subprocess.run([run.python, '-c', 'import os, torch; print(os.path.dirname('
                            'torch.__file__))'],
                           env=run.env(), capture_output=True, text=True, check=True)
    torch_dir = Path(probe.stdout.strip())
    changed = patch_mmcv_sources(src, torch_dir / 'include')
    log.write(f'[cuda_check] THC include replaced in: {changed or "nothing (torch has it)"}\n')
    # torch's CUDA library packages (nvidia/...) are installed beside it
    env = mmcv_compile_env(run.env(), torch_dir.parent)
    # Only the kit's packages (setuptools 81 first): this checkout has nothing to lend the
    # build, and its build/ folder would pose as a namespace package named 'build'.
    env['PYTHONPATH'] = os.pathsep.join(filter(None, [str(SITE), os.environ.get('PYTHONPATH')]))
    t0 = time.time()
    print(f'[cuda_check] building mmcv: {" ".join(f"{k}={v}" for k, v in MMCV_BUILD_ENV.items())}',
          flush=True)
    try:
        rc = run.sh('mmcv', mmcv_build_cmd(run.python), log, limit, env=env, cwd=src)
    except TimeoutError:
        # ninja's objects stay in build/device/src: a next call on this machine resumes.
        run.facts['mmcv_build_s'] = f'> {time.time() - t0:.0f} (stopped, resumable)'
        raise
    build_s = round(time.time() - t0, 1)
    run.facts['mmcv_build_s'] = build_s
    print(f'[cuda_check] mmcv build took {build_s:.0f} s (rc {rc})', flush=True)
    check(rc == 0, f'mmcv build failed after {build_s:.0f} s (logs/mmcv.log)')
    tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
    wheels = sorted(DIST.glob(f'{MMCV}-{tag}-*.whl'), key=lambda p: p.stat().st_mtime)
    check(bool(wheels), f'the build left no wheel in {DIST}')
    check(run.sh('mmcv', pip + [str(wheels[-1])], log, run.left() - 10) == 0,
          'installing the built wheel failed')
    check(run.sh('mmcv', [run.python, '-c', MMCV_SMOKE], log, 60) == 0,
          'the built mmcv fails its CUDA smoke test (logs/mmcv.log)')
    save_wheel(run, wheels[-1])
    return (f'built in {build_s:.0f} s, {wheels[-1].stat().st_size / 2**20:.1f} MiB wheel'
            + ('' if plan['prebuilt'] in ('absent', 'ok') else f'; {plan["message"]}'))


def save_wheel(run: Run, wheel: Path) -> None:
    """Copy the wheel to the output folder, in parts if the device tool would refuse it."""
    size = wheel.stat().st_size
    if size <= PART_BYTES:
        shutil.copy2(wheel, run.outdir / wheel.name)
        return
    with open(wheel, 'rb') as f:
        index = 1
        while chunk := f.read(PART_BYTES):
            (run.outdir / f'{wheel.name}.part{index}').write_bytes(chunk)
            index += 1


IMPORTS = '''
import mmcv, mmdet, mmengine, torch, mmdet_ddetr
from mmdet_ddetr.models.deformable_detr import MSDeformAttention  # noqa: F401
print('mmcv', mmcv.__version__, 'mmdet', mmdet.__version__, 'mmengine', mmengine.__version__,
      'torch', torch.__version__, 'mmdet_ddetr', mmdet_ddetr.__version__, mmdet_ddetr.__file__)
'''


def stage_import(run: Run, log, limit: float) -> str:
    py(run, log, limit, IMPORTS)
    log.flush()
    return (run.logs / 'import.log').read_text().strip().splitlines()[-1]


def pytest(run: Run, log, limit: float, name: str, *selection: str) -> str:
    cmd = [run.python, '-m', 'pytest', '-q', '-m', 'cuda', '-p', 'no:cacheprovider',
           '-o', 'addopts=', *selection]
    if run.dry:
        cmd.append('--collect-only')
    else:
        cmd += ['-rfEs', f'--junitxml={run.logs / (name + ".xml")}']
    rc = run.sh(name, cmd, log, limit)
    log.flush()
    tail = [line for line in (run.logs / f'{name}.log').read_text().splitlines() if line]
    last = tail[-1] if tail else ''
    check(rc == 0, f'pytest exit {rc}: {last}')
    if run.dry:
        count = re.search(r'(\d+)(?:/\d+)? tests? collected', last)
        check(count is not None and int(count.group(1)) > 0, f'no CUDA test collected: {last}')
    return last


CUDA_TESTS = 'tests/cuda'


def stage_tests_msda(run: Run, log, limit: float) -> str:
    if run.dry:  # collection of every CUDA test, not only this stage's
        return pytest(run, log, limit, 'tests-msda', CUDA_TESTS)
    return pytest(run, log, limit, 'tests-msda', f'{CUDA_TESTS}/test_ms_deform_attn_cuda.py')


def stage_tests_models(run: Run, log, limit: float) -> str:
    if run.dry:
        raise Skip('needs a GPU (collected by tests-msda)')
    # Rehearsed on 2 cores, the 8 AMP training runs would take most of an hour.
    deselect = ['-k', 'not amp_training'] if run.rehearse else []
    return pytest(run, log, limit, 'tests-models', f'{CUDA_TESTS}/test_models_cuda.py',
                  f'{CUDA_TESTS}/test_amp_cuda.py', f'{CUDA_TESTS}/test_sync_free_cuda.py',
                  *deselect)


def stage_runner(run: Run, log, limit: float) -> str:
    if run.dry:
        raise Skip('needs a GPU (collected by tests-msda)')
    return pytest(run, log, limit, 'runner', f'{CUDA_TESTS}/test_runner_cuda.py')


def stage_parity(run: Run, log, limit: float) -> str:
    tool = 'tools/model_converters/check_official_parity.py'
    if run.dry:
        proc = subprocess.run([run.python, tool, '--help'], cwd=REPO, env=run.env(),
                              capture_output=True, text=True, timeout=limit)
        log.write(proc.stdout + proc.stderr)
        check(proc.returncode == 0 and '--device' in proc.stdout, 'no --device option')
        return 'check_official_parity.py --device parses (run needs a GPU)'
    # The test runs the tool with --device cuda on every fixture of tests/data/official.
    return pytest(run, log, limit, 'parity', f'{CUDA_TESTS}/test_parity_cuda.py')


def stage_bench(run: Run, log, limit: float) -> str:
    tool = 'tools/analysis_tools/benchmark_vs_mmdet.py'
    out_json = run.logs / 'bench.json'
    if not run.gpu:
        cmd = [run.python, tool, '--device', 'cpu', '--variants', 'plain', '--iters', '1',
               '--warmup', '0', '--img-size', '64', '96', '--num-queries', '20',
               '--precisions', 'fp32', 'amp', '--json', out_json]
    else:
        cmd = [run.python, tool, '--device', 'cuda', '--variants', 'plain', 'single-scale',
               'refine', 'twostage', 'smca', '--batch-size', '2', '--img-size', '800', '1066',
               '--iters', str(run.args.bench_iters), '--warmup', str(run.args.bench_warmup),
               '--precisions', 'fp32', 'amp', '--json', out_json,
               '--profile-dir', run.logs / 'profiles']
    rc = run.sh('bench', cmd, log, limit)
    log.flush()
    text = (run.logs / 'bench.log').read_text()
    table = text[text.rfind('metric'):] if 'metric' in text else text[-4000:]
    kit.write_atomic(run.outdir / 'bench.txt', table)
    check(rc == 0, f'benchmark exit {rc}')
    check(out_json.is_file(), 'the benchmark wrote no JSON')
    result = json.loads(out_json.read_text())
    run.facts['bench'] = result
    missed = [f"{t['variant']} {t['mode']} {t['kind']} {t['precision']}"
              for t in result['targets'] if not t['target_met']]
    return (f"{len(result['rows'])} rows, {len(result['targets'])} targets, missed: "
            f"{missed or 'none'}")


MMDET_BENCH = '''
import os.path as osp, runpy, sys, torch
import mmdet, mmdet_ddetr  # noqa: F401  (registers DDETR for mmdet's script)
from mmengine.config import Config
from mmengine.registry import DefaultScope
from mmdet.registry import MODELS
config, ckpt, data = sys.argv[1:4]
DefaultScope.get_instance('mmdet_bench', scope_name='mmdet')
cfg = Config.fromfile(config)
cfg.model.backbone.init_cfg = None
torch.manual_seed(0)
model = MODELS.build(cfg.model)
model.init_weights()
torch.save(dict(state_dict=model.state_dict(), meta=dict()), ckpt)
script = osp.join(osp.dirname(mmdet.__file__), '.mim/tools/analysis_tools/benchmark.py')
sys.argv = [script, config, '--checkpoint', ckpt, '--task', 'inference', '--max-iter', '60',
            '--num-warmup', '10', '--log-interval', '25', '--cfg-options',
            'model.backbone.init_cfg=None', f'test_dataloader.dataset.data_root={data}/',
            'test_dataloader.dataset.ann_file=annotations/val.json',
            'test_dataloader.dataset.data_prefix.img=val/']
runpy.run_path(script, run_name='__main__')
'''
MMDET_BENCH_CONFIG = 'configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py'
SYNTHETIC = WORK / 'synthetic'


def make_synthetic(run: Run, log, limit: float) -> Path:
    """The quickstart's synthetic dataset (128 px, as the quickstart configs expect)."""
    if not (SYNTHETIC / 'annotations' / 'val.json').is_file():
        check(run.sh('data', [run.python, 'tools/misc/generate_synthetic_dataset.py', '--out',
                              SYNTHETIC, '--seed', '0', '--num-train', '64', '--num-val', '64',
                              '--img-size', '128'], log, limit) == 0,
              'synthetic dataset generation failed')
    return SYNTHETIC


def stage_mmdet_bench(run: Run, log, limit: float) -> str:
    script = 'mmdet/.mim/tools/analysis_tools/benchmark.py'
    probe = subprocess.run([run.python, '-c', 'import mmdet, os; print(os.path.dirname('
                            'mmdet.__file__))'], env=run.env(), capture_output=True, text=True)
    path = Path(probe.stdout.strip()).parent / script
    if run.dry:
        check(path.is_file() or probe.returncode == 0, f'{script} not found')
        if not path.is_file():
            raise Skip(f'{script} is not in this environment\'s mmdet (the kit\'s wheel has it)')
        return f'{script} present (it hard-codes .cuda(): run needs a GPU)'
    if run.rehearse:
        check(path.is_file(), f'{script} is not in the installed mmdet')
        raise Skip(f'{script} present; it hard-codes .cuda(): needs a GPU')
    data = make_synthetic(run, log, limit / 3)
    py(run, log, run.left() - 10, MMDET_BENCH, MMDET_BENCH_CONFIG,
       str(WORK / 'ddetr_r50_init.pth'), str(data))
    log.flush()
    fps = re.findall(r'Overall fps: ([\d.]+)', (run.logs / 'mmdet-bench.log').read_text())
    check(bool(fps), 'no FPS line in the log')
    run.facts['mmdet_benchmark_fps'] = float(fps[-1])
    return (f'mmdet benchmark.py, DDETR R50 (our config), synthetic images resized to 800 px '
            f'short side, batch 1: {fps[-1]} img/s (paper: 15 FPS on a V100)')


STAGES = {'env': stage_env, 'kit': stage_kit, 'install': stage_install, 'mmcv': stage_mmcv,
          'import': stage_import, 'tests-msda': stage_tests_msda, 'parity': stage_parity,
          'tests-models': stage_tests_models, 'runner': stage_runner, 'bench': stage_bench,
          'mmdet-bench': stage_mmdet_bench}


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    run = Run(args)
    kind = 'DRY RUN (CPU)' if run.dry else 'REHEARSAL (CPU)' if run.rehearse else 'GPU run'
    print(f'[cuda_check] {kind}: budget {args.budget:.0f} s,'
          f' results -> {run.outdir}', flush=True)
    for name in ORDER:
        run.stage(name, STAGES[name])
    run.write()
    width = max(len(s['name']) for s in run.stages) if run.stages else 5
    print(f'\n{"stage":<{width}}  {"status":<8} {"s":>6}  detail')
    for s in run.stages:
        print(f'{s["name"]:<{width}}  {s["status"]:<8} {s["seconds"]:>6.1f}  {s["detail"][:150]}')
    failed = [s['name'] for s in run.stages if s['status'] in ('failed', 'timeout')]
    print(f'[cuda_check] {"FAILED: " + ", ".join(failed) if failed else "all stages passed"} '
          f'({time.time() - run.start:.0f} s); summary {run.outdir / "summary.json"}')
    if run.dry:
        shutil.rmtree(run.logs, ignore_errors=True)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

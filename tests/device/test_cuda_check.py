"""``cuda_check.sh --dry-run`` on the CPU: the GPU kit cannot rot unnoticed.

What this covers on a fresh clone (CI), where ``tools/device/prepare.sh`` has not run (it needs
the package index) and ``.device/`` is absent: argument handling, the environment probe, the
kit stage reporting "not prepared" (skipped, not failed), imports, the collection of every
CUDA test, the parity tool's ``--device`` option, a one-iteration CPU benchmark at fp32 and
bf16 AMP with its JSON, and the summary and log archive. Where ``.device/`` exists (a developer
ran prepare.sh), the same run also checks every hash, that the wheels install on Python 3.12
and that mmcv's source patch still applies; a bad kit then fails this test.
"""
import importlib.util
import json
import shutil
import subprocess
import sys
import tarfile
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / 'tools' / 'device' / 'cuda_check.py'
ALL_STAGES = ['env', 'kit', 'install', 'mmcv', 'import', 'tests-msda', 'parity',
              'tests-models', 'bench', 'runner', 'mmdet-bench']


def run(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def test_dry_run(tmp_path):
    proc = run(str(tmp_path), '--dry-run', '--budget', '280')
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / 'summary.json').read_text())
    assert summary['mode'] == 'dry-run' and summary['ok'] and summary['failed'] == []
    stages = {s['name']: s for s in summary['stages']}
    assert list(stages) == ALL_STAGES
    prepared = (REPO / '.device').is_dir()
    expected_ok = ['env', 'import', 'tests-msda', 'parity', 'bench']
    if prepared:
        expected_ok += ['kit', 'install', 'mmcv']
    else:
        assert stages['kit']['status'] == 'skipped'
        assert 'prepare.sh' in stages['kit']['detail']
    for name in expected_ok:
        assert stages[name]['status'] == 'ok', stages[name]
    assert stages['runner']['status'] == 'skipped'  # needs a GPU
    assert 'collected' in stages['tests-msda']['detail']
    bench = summary['bench']
    assert {r['precision'] for r in bench['rows']} == {'fp32', 'amp'}
    assert all(r['ours'] > 0 and r['mmdet'] > 0 for r in bench['rows'] if r['kind'] == 'speed')
    assert (tmp_path / 'bench.txt').read_text().startswith('metric')
    with tarfile.open(tmp_path / 'logs.tar.gz') as tar:
        names = tar.getnames()
    assert 'logs/bench.log' in names and 'logs/tests-msda.log' in names


def test_bad_arguments_are_named(tmp_path):
    proc = run(str(tmp_path), '--stages', 'bench,nonsense', '--dry-run')
    assert proc.returncode == 2 and "unknown stage(s) ['nonsense']" in proc.stderr
    proc = run(str(tmp_path), '--budget', '5', '--dry-run')
    assert proc.returncode == 2 and '--budget must be >= 30' in proc.stderr
    assert not (tmp_path / 'summary.json').exists()


def load_cuda_check():
    spec = importlib.util.spec_from_file_location('cuda_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stages_bring_what_they_need(tmp_path):
    module = load_cuda_check()
    args = module.parse_args([str(tmp_path), '--stages', 'bench'])
    assert args.stages == ['env', 'kit', 'install', 'mmcv', 'import', 'bench']


def fake_prebuilt(module, root: Path, data: bytes = b'not really a wheel') -> Path:
    """A kit root whose prebuilt/ holds a tiny fake wheel, recorded as prebuild_mmcv.py does:
    BUILD.json (no problems) and its sha256 in MANIFEST.tsv (kit.write_manifest)."""
    (root / 'prebuilt').mkdir(parents=True)
    wheel = root / 'prebuilt' / 'mmcv-2.1.0-cp312-cp312-linux_x86_64.whl'
    wheel.write_bytes(data)
    build = dict(wheel=wheel.name, sha256=module.kit.sha256(wheel), problems=[])
    (root / 'prebuilt' / 'BUILD.json').write_text(json.dumps(build))
    empty_lock = root.parent / 'empty.lock'
    empty_lock.write_text('')
    module.kit.write_manifest(root, empty_lock)
    return wheel


def test_mmcv_plan_installs_only_a_verified_prebuilt_wheel(tmp_path):
    module = load_cuda_check()
    root, site = tmp_path / 'kit', tmp_path / 'site'
    build = module.mmcv_build_cmd('py312')
    assert build[1:3] == ['setup.py', '-q']
    plan = module.mmcv_plan('py312', root, site)  # no wheel: compile, as before
    assert (plan['action'], plan['prebuilt'], plan['cmd']) == ('compile', 'absent', build)

    wheel = fake_prebuilt(module, root)
    plan = module.mmcv_plan('py312', root, site)
    assert (plan['action'], plan['prebuilt']) == ('install-prebuilt', 'ok')
    assert plan['cmd'] == ['py312', '-m', 'pip', 'install', '--no-index', '--no-deps',
                           '--no-compile', '--disable-pip-version-check', '--target', str(site),
                           '--upgrade', str(wheel)]

    wheel.write_bytes(b'tampered on the way')  # hash mismatch: named, then compiled
    plan = module.mmcv_plan('py312', root, site)
    assert (plan['action'], plan['prebuilt'], plan['cmd']) == ('compile', 'mismatch', build)
    assert str(wheel) in plan['message'] and 'sha256' in plan['message']
    assert 'MANIFEST.tsv' in plan['message']

    wheel.write_bytes(b'not really a wheel')
    assert module.mmcv_plan('py312', root, site)['action'] == 'install-prebuilt'
    (root / 'prebuilt' / 'BUILD.json').write_text(json.dumps(dict(
        wheel=wheel.name, sha256=module.kit.sha256(wheel), problems=['cubins for [] only'])))
    plan = module.mmcv_plan('py312', root, site)
    assert (plan['action'], plan['prebuilt']) == ('compile', 'problems')
    assert wheel.name in plan['message'] and 'cubins for [] only' in plan['message']

    (root / 'prebuilt' / 'BUILD.json').unlink()
    assert module.mmcv_plan('py312', root, site)['prebuilt'] == 'problems'
    (root / 'MANIFEST.tsv').unlink()
    plan = module.mmcv_plan('py312', root, site)
    assert plan['prebuilt'] == 'mismatch' and 'no row' in plan['message']


def fake_run(module, tmp_path, rehearse=False):
    calls = []

    def sh(name, cmd, log, timeout, env=None, cwd=None):
        calls.append([str(c) for c in cmd])
        return 0
    run = types.SimpleNamespace(python='py312', dry=False, rehearse=rehearse, gpu=not rehearse,
                                facts={}, outdir=tmp_path / 'out', sh=sh, left=lambda: 500.0)
    run.outdir.mkdir(parents=True)
    return run, calls


def test_mmcv_stage_runs_the_chosen_command(tmp_path, monkeypatch, capsys):
    """The GPU branch of the mmcv stage with commands recorded, not run: a matching wheel is
    pip-installed (then smoke-tested) and nothing is built; a mismatching one is named and the
    stage goes on to compile (here it stops at the absent sdist, before running anything)."""
    module = load_cuda_check()
    root = tmp_path / 'kit'
    monkeypatch.setattr(module, 'KIT', root)
    monkeypatch.setattr(module, 'SITE', tmp_path / 'site')
    monkeypatch.setattr(module, 'DIST', tmp_path / 'dist')
    wheel = fake_prebuilt(module, root)
    run, calls = fake_run(module, tmp_path)
    detail = module.stage_mmcv(run, open(tmp_path / 'log', 'w'), 100)
    assert 'installed' in detail and 'no build' in detail
    assert calls[0] == module.mmcv_plan('py312')['cmd'] and calls[0][-1] == str(wheel)
    assert calls[1][:2] == ['py312', '-c'] and 'MultiScaleDeformableAttnFunction' in calls[1][2]  # smoke
    assert len(calls) == 2

    wheel.write_bytes(b'tampered on the way')
    run, calls = fake_run(module, tmp_path / 'second')
    with pytest.raises(RuntimeError, match='cannot compile mmcv'):
        module.stage_mmcv(run, open(tmp_path / 'log2', 'w'), 100)
    assert calls == []  # neither the tampered wheel nor anything else was installed
    out = capsys.readouterr().out
    assert f'prebuilt wheel {wheel} has sha256' in out and 'mmcv is compiled' in out
    assert run.facts['mmcv_plan']['prebuilt'] == 'mismatch'


def test_rehearsal_installs_the_verified_wheel_and_never_compiles(tmp_path, monkeypatch):
    """``--rehearse`` runs the GPU branch's install of the prebuilt wheel, then a CPU smoke
    test (no CUDA here); without a verified wheel it fails, naming why, instead of compiling."""
    module = load_cuda_check()
    root = tmp_path / 'kit'
    monkeypatch.setattr(module, 'KIT', root)
    monkeypatch.setattr(module, 'SITE', tmp_path / 'site')
    wheel = fake_prebuilt(module, root)
    run, calls = fake_run(module, tmp_path, rehearse=True)
    detail = module.stage_mmcv(run, open(tmp_path / 'log', 'w'), 100)
    assert 'installed and CPU-smoke-tested' in detail
    assert calls[0] == module.mmcv_plan('py312')['cmd'] and calls[0][-1] == str(wheel)
    assert 'mmcv.ops.nms' in calls[1][2] and 'cuda' not in calls[1][2]
    assert len(calls) == 2

    wheel.write_bytes(b'tampered on the way')
    run, calls = fake_run(module, tmp_path / 'second', rehearse=True)
    with pytest.raises(RuntimeError, match='never compiles.*has sha256'):
        module.stage_mmcv(run, open(tmp_path / 'log2', 'w'), 100)
    assert calls == []


def test_rehearsal_needs_the_gpu_machines_python(tmp_path):
    proc = run(str(tmp_path), '--rehearse', '--stages', 'env')
    env = json.loads((tmp_path / 'summary.json').read_text())['stages'][0]
    if sys.version_info[:2] == (3, 12):
        pytest.skip('this Python is 3.12: whether its torch is 2.11 decides, not tested here')
    assert proc.returncode == 1 and env['status'] == 'failed', env
    assert "needs the GPU machine's Python 3.12 and torch 2.11.0" in env['detail']
    assert 'rehearse.sh' in env['detail']
    proc = run(str(tmp_path), '--rehearse', '--dry-run')
    assert proc.returncode == 2 and 'not allowed with' in proc.stderr


def minimal_wheel(tag: str) -> bytes:
    """An installable (empty) mmcv 2.1.0 wheel with the given tag, as bytes."""
    import io
    import zipfile
    info = 'mmcv-2.1.0.dist-info'
    files = {'mmcv/__init__.py': '',
             f'{info}/METADATA': 'Metadata-Version: 2.1\nName: mmcv\nVersion: 2.1.0\n',
             f'{info}/WHEEL': f'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: false\n'
                              f'Tag: {tag}\n'}
    files[f'{info}/RECORD'] = ''.join(f'{name},,\n' for name in [*files, f'{info}/RECORD'])
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, 'w') as zf:
        for name, text in files.items():
            zf.writestr(name, text)
    return buffer.getvalue()


def test_dry_run_mmcv_stage_checks_the_prebuilt_wheels_tags(tmp_path, monkeypatch):
    """With a verified wheel the dry run asks pip whether Python 3.12 x86-64 accepts its tags
    (what the GPU machine's pip will be asked), instead of the sdist checks."""
    module = load_cuda_check()
    root = tmp_path / 'kit'
    monkeypatch.setattr(module, 'KIT', root)
    fake_prebuilt(module, root, minimal_wheel('cp312-cp312-linux_x86_64'))
    run = module.Run(module.parse_args([str(tmp_path / 'out'), '--dry-run']))
    detail = module.stage_mmcv(run, open(tmp_path / 'log', 'w'), 120)
    assert 'would install mmcv-2.1.0-cp312-cp312-linux_x86_64.whl' in detail
    assert 'no build' in detail
    shutil.rmtree(run.logs, ignore_errors=True)

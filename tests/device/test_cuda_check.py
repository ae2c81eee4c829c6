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
import subprocess
import sys
import tarfile
from pathlib import Path

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


def test_stages_bring_what_they_need(tmp_path):
    spec = importlib.util.spec_from_file_location('cuda_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = module.parse_args([str(tmp_path), '--stages', 'bench'])
    assert args.stages == ['env', 'kit', 'install', 'mmcv', 'import', 'bench']

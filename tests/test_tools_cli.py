"""Smoke tests of the command-line tools that need no model (fast, CPU)."""
import json
import os.path as osp
import subprocess
import sys

import pytest

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
GENERATOR = osp.join(ROOT, 'tools', 'misc', 'generate_synthetic_dataset.py')


def _run(*args):
    return subprocess.run([sys.executable, GENERATOR, *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize('args, message', [
    (['--num-train', '0'], '--num-train: must be >= 1'),
    (['--img-size', 'big'], "--img-size: expected an integer, got 'big'"),
    (['--img-size', '16'], '--img-size: must be >= 32'),
    (['--min-objects', '4', '--max-objects', '2'], 'min_objects <= max_objects'),
    (['--min-rel-size', '1.5'], '--min-rel-size: must be in (0, 1]'),
    (['--no-such-flag'], 'unrecognized arguments'),
])
def test_generator_cli_rejects_bad_args(tmp_path, args, message):
    out = tmp_path / 'ds'
    proc = _run('--out', str(out), *args)
    assert proc.returncode == 2
    assert 'error:' in proc.stderr and message in proc.stderr
    assert not out.exists()  # nothing written on a usage error


def test_generator_cli_writes_and_reuses(tmp_path):
    out = str(tmp_path / 'ds')
    args = ('--out', out, '--seed', '1', '--num-train', '4', '--num-val', '2',
            '--img-size', '64')
    first = _run(*args)
    assert first.returncode == 0, first.stderr
    with open(osp.join(out, 'annotations', 'val.json')) as f:
        assert len(json.load(f)['images']) == 2
    second = _run(*args)
    assert second.returncode == 0 and 'nothing to do' in second.stdout


@pytest.mark.parametrize('missing', ['config', 'checkpoint'])
def test_test_tool_checks_paths_before_building(tmp_path, missing):
    """tools/test.py names a missing config or checkpoint as a usage error, before it builds
    the model or reads any data (the work dir is never created)."""
    config = osp.join(ROOT, 'configs', 'deformable_detr',
                      'deformable-detr_r18_1xb8-quickstart_synthetic.py')
    checkpoint = tmp_path / 'epoch_1.pth'
    if missing == 'config':
        config = str(tmp_path / 'nope.py')
        checkpoint.write_bytes(b'')
    proc = subprocess.run([sys.executable, osp.join(ROOT, 'tools', 'test.py'), config,
                           str(checkpoint), '--work-dir', str(tmp_path / 'work')],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert f'{missing} ' in proc.stderr and 'does not exist' in proc.stderr
    assert not (tmp_path / 'work').exists()


def test_generator_cli_refuses_a_folder_it_did_not_create(tmp_path):
    out = tmp_path / 'photos'
    out.mkdir()
    (out / '000001.png').write_bytes(b'holiday')
    proc = _run('--out', str(out), '--num-train', '2', '--num-val', '1', '--img-size', '64')
    assert proc.returncode == 1
    assert proc.stderr.startswith('error: ') and 'Traceback' not in proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ['000001.png']

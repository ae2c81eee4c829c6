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

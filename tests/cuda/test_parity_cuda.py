"""Official parity on CUDA: ``check_official_parity.py --device cuda`` on every official
fixture, float64 (mmcv's deformable-attention kernel dispatches double), tolerance 1e-4 as on
the CPU. The tool itself is run, so its ``--device`` option is what is proven."""
import os
import re
import subprocess
import sys

import pytest

from tests.conftest import FIXTURES, REPO
from .conftest import record

pytestmark = pytest.mark.cuda

TOOL = REPO / 'tools' / 'model_converters' / 'check_official_parity.py'


def test_every_fixture_on_cuda(device):
    fixtures = sorted(FIXTURES.glob('*.pt'))
    assert fixtures, f'no fixtures in {FIXTURES}'
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        filter(None, [str(REPO), os.environ.get('PYTHONPATH')])))
    proc = subprocess.run([sys.executable, str(TOOL), '--device', device.type,
                           *map(str, fixtures)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600)
    worst = dict(re.findall(r'^== (\S+) .*max abs diff (\S+)$', proc.stdout, re.M))
    record('parity', fixtures=worst)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert len(worst) == len(fixtures) == proc.stdout.count('PASSED:'), proc.stdout[-2000:]

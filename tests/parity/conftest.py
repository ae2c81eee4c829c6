"""The float64 parity checks run in one child process of check_official_parity.py.

That tool pins MKL's CPU-independent code path before torch starts (see its docstring: the
fixtures' float32 islands were rounded on it). Doing the same in the test process would slow
every matrix product of the whole suite, so only the checker's own process runs pinned.
"""
import json
import subprocess
import sys
from typing import Dict

import pytest

from tests.conftest import FIXTURES, REPO

ALL_FIXTURES = ['ddetr_plain.pt', 'ddetr_refine.pt', 'ddetr_refine_twostage.pt',
                'smca_single_scale.pt']


@pytest.fixture(scope='session')
def float64_diffs(tmp_path_factory) -> Dict[str, Dict[str, float]]:
    """{fixture file name: {check: max abs difference}} for every official fixture."""
    paths = [FIXTURES / name for name in ALL_FIXTURES]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        pytest.fail(f'official fixtures {missing} are missing (tests/data/official/README.md)')
    out = tmp_path_factory.mktemp('parity') / 'diffs.json'
    # --tol inf: the tests below apply their own, stricter bound to every check.
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools/model_converters/check_official_parity.py'),
         *map(str, paths), '--tol', 'inf', '--json', str(out)],
        capture_output=True, text=True, cwd=REPO, timeout=900)
    assert proc.returncode == 0, f'check_official_parity.py failed:\n{proc.stdout}\n{proc.stderr}'
    with open(out) as f:
        return json.load(f)

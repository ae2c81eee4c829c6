"""The guard rail of refactors that must not change numerics (moves, merges): the predictions
and losses of the six small variants, in float64, are bit-identical to the recorded ones.

The values are computed by ``tools/misc/record_golden_outputs.py`` in a child process, which
pins MKL's and torch's CPU code paths and the thread count (the rounding of this process is not
pinned, and MKL reads its setting only when it starts). A step that changes numerics on purpose
records again (``python tools/misc/record_golden_outputs.py``) and says in its commit which
values moved and why.
"""
import subprocess
import sys
from typing import Dict

import pytest
import torch
from torch import Tensor

from tests.conftest import REPO
from tests.variants import SMALL_VARIANTS

GOLDEN = REPO / 'tests' / 'data' / 'golden' / 'small_variants.pt'
RECORDER = REPO / 'tools' / 'misc' / 'record_golden_outputs.py'


@pytest.fixture(scope='module')
def golden() -> Dict[str, Dict[str, Tensor]]:
    if not GOLDEN.is_file():
        pytest.fail(f'{GOLDEN} is missing: record it on the code before the change with '
                    f'python {RECORDER.relative_to(REPO)}')
    return torch.load(GOLDEN, map_location='cpu', weights_only=True)


@pytest.fixture(scope='module')
def recorded(tmp_path_factory) -> Dict[str, Dict[str, Tensor]]:
    out = tmp_path_factory.mktemp('golden') / 'now.pt'
    proc = subprocess.run([sys.executable, str(RECORDER), '--out', str(out)],
                          capture_output=True, text=True, cwd=REPO, timeout=600)
    assert proc.returncode == 0, f'{RECORDER.name} failed:\n{proc.stdout}\n{proc.stderr}'
    return torch.load(out, map_location='cpu', weights_only=True)


def describe_difference(got: Tensor, want: Tensor) -> str:
    if got.shape != want.shape or got.dtype != want.dtype:
        return f'{tuple(got.shape)} {got.dtype}, recorded {tuple(want.shape)} {want.dtype}'
    return f'max abs difference {(got.double() - want.double()).abs().max().item():.3g}'


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_outputs_and_losses_bit_identical(variant, golden, recorded):
    want, got = golden[variant], recorded[variant]
    assert sorted(got) == sorted(want), f'{variant}: other outputs or losses than recorded'
    differ = {key: describe_difference(got[key], want[key])
              for key in want if not torch.equal(got[key], want[key])}
    assert not differ, (f'{variant}: not bit-identical to {GOLDEN.name}: {differ}. Record again '
                        'only where the change alters numerics on purpose, and say why.')

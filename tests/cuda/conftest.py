"""Shared by the CUDA tests: the device, float32 without TF32, and a record of measured errors.

The tests are marked ``cuda`` and compare the GPU against the CPU. ``tests/conftest.py`` skips
them where torch sees no GPU. ``MMDET_DDETR_CUDA_TEST_DEVICE=cpu`` runs them with the CPU in
the GPU's place: the comparisons are then trivial, but every line of the tests runs, which is
how they were rehearsed without a GPU.
"""
import json
import os
from typing import Iterator

import pytest
import torch

DEVICE = os.environ.get('MMDET_DDETR_CUDA_TEST_DEVICE', 'cuda')
#: JSON-lines file the tests append their measured errors to (set by tools/device/cuda_check).
REPORT = os.environ.get('MMDET_DDETR_CUDA_REPORT')


@pytest.fixture
def device() -> torch.device:
    return torch.device(DEVICE)


@pytest.fixture(autouse=True)
def _exact_float32() -> Iterator[None]:
    """TF32 rounds matmuls and convolutions to 10 mantissa bits (about 1e-3 relative): the
    float32 comparisons need true float32 on the GPU."""
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def rel_err(actual: torch.Tensor, expected: torch.Tensor, floor: float = 0.0) -> float:
    """``||actual - expected|| / max(||expected||, floor)`` in float64 on the CPU.

    ``floor`` keeps a tensor that is zero up to rounding (a gradient that cancels) from turning
    rounding noise into a large relative error.
    """
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert a.shape == e.shape, (a.shape, e.shape)
    assert torch.isfinite(a).all(), 'non-finite values'
    denom = max(e.norm().item(), floor)
    return (a - e).norm().item() / denom if denom > 0 else (a - e).norm().item()


def record(test: str, **values) -> None:
    """Append a measurement to the report file, when one is set."""
    if REPORT:
        with open(REPORT, 'a') as f:
            f.write(json.dumps(dict(test=test, device=DEVICE, **values)) + '\n')

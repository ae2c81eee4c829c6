"""Device placement on fake CUDA: no tensor the training step or predict makes is created on
the CPU (``torch.zeros(n)`` & co. without the input's device), moved from the CPU to CUDA, or
mixed as a CPU tensor into a CUDA op. Host data uploaded in one call
(``torch.tensor(data, device=x.device)``, ``x.new_tensor(data)``) is how such data reaches a
GPU and is allowed.

Proven: the Python calls of our code and mmdet's ask for the input's device. Not proven: what
C++ kernels allocate (they follow their inputs' device on a GPU).
"""
import pytest
import torch

from .conftest import PRECISIONS, VARIANTS, allowed, audit, in_library, run_audit

ALLOWED = {
    'HungarianAssigner.assign': 'scipy results come back with from_numpy(...).to(device)',
    'FocalLoss.forward': "mmdet's CPU branch (one_hot); a GPU runs mmcv's sigmoid_focal_loss",
}


def misplaced(run, phase=None):
    return [e for kind in ('cpu_created', 'moved', 'mixed') for e in run.events(kind, phase)
            if in_library(e) and not allowed(e, ALLOWED)]


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('variant', VARIANTS)
def test_everything_is_made_on_the_input_device(variant, precision):
    run = audit(variant, precision)
    assert run.events('upload'), 'no upload recorded: audit blind?'
    found = misplaced(run)
    assert not found, '\n'.join(map(str, found))


def test_planted_cpu_tensor_is_caught():
    def plant(model, ext):
        def hook(module, inputs, outputs):
            torch.arange(3).to(outputs[0].device)  # the planted bug: made on CPU, moved
        return _Removable(model.backbone.register_forward_hook(hook))

    kinds = sorted({e.kind for e in misplaced(run_audit('ddetr', 'fp32', plant))})
    assert kinds == ['cpu_created', 'moved'], kinds


class _Removable:
    def __init__(self, handle):
        self.handle = handle

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.handle.remove()

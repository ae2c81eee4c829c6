"""Whole models on CUDA against the same models on the CPU, float32, one fixed batch.

All six variants: Deformable DETR plain (4 levels), single-scale, box refinement, refinement +
two-stage; SMCA-DETR single-scale and multi-scale. Same weights on both devices (one model
copied), dropout off, no TF32. Compared: the head outputs of every decoder layer (tensor
mode), each loss, and every parameter's gradient, within 1e-4 relative (norm-wise; a gradient
is measured against at least 1e-3 of the largest gradient norm of the model, so that one which
cancels to rounding noise cannot fail on noise).

A Hungarian matching or a two-stage top-k that flips between devices on a near tie would
show up here as a large loss difference: the assertion message then names the loss.
"""
import copy
from typing import Dict

import pytest
import torch
from torch import nn

from tests.conftest import build_model, make_batch
from tests.variants import SMALL_VARIANTS
from .conftest import record, rel_err

pytestmark = pytest.mark.cuda

BOUND = 1e-4


def no_dropout(model: nn.Module) -> nn.Module:
    """Dropout draws different masks on the two devices: switch it off, keep train mode."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        elif isinstance(module, nn.MultiheadAttention):
            module.dropout = 0.0  # attention-weight dropout, read by the fused SDPA call
    return model


def batch():
    return make_batch([(64, 80), (56, 72)], boxes_per_image=[3, 2])


def run(model: nn.Module, device: torch.device) -> Dict[str, torch.Tensor]:
    """Head outputs, losses and gradients of ``model`` on ``device`` (results on the CPU)."""
    model = copy.deepcopy(model).to(device)
    results = {}
    model.eval()
    data = model.data_preprocessor(batch(), training=False)
    with torch.no_grad():
        outputs = model(**data, mode='tensor')
    for i, tensor in enumerate(outputs):
        if isinstance(tensor, torch.Tensor):
            results[f'out.{i}'] = tensor.float().cpu()
    model.train()
    data = model.data_preprocessor(batch(), training=True)
    losses = model(**data, mode='loss')
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    for key, value in losses.items():
        if 'loss' in key:
            results[f'loss.{key}'] = value.detach().float().cpu().reshape(1)
    for name, param in model.named_parameters():
        if param.grad is not None:
            results[f'grad.{name}'] = param.grad.float().cpu()
    return results


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_cuda_matches_cpu(device, variant):
    model = no_dropout(build_model(SMALL_VARIANTS[variant]()))
    ref = run(model, torch.device('cpu'))
    got = run(model, device)
    assert set(got) == set(ref), f'different outputs/parameters: {set(got) ^ set(ref)}'
    assert any(k.startswith('grad.') for k in ref) and any(k.startswith('loss.') for k in ref)
    grad_floor = 1e-3 * max(v.norm().item() for k, v in ref.items() if k.startswith('grad.'))
    errors = {k: rel_err(got[k], ref[k], grad_floor if k.startswith('grad.') else 0.0)
              for k in ref}
    worst = sorted(errors.items(), key=lambda kv: -kv[1])[:5]
    record(f'model_{variant}', max_out=max(v for k, v in errors.items() if k[:4] == 'out.'),
           max_loss=max(v for k, v in errors.items() if k[:5] == 'loss.'),
           max_grad=max(v for k, v in errors.items() if k[:5] == 'grad.'), worst=worst)
    bad = {k: v for k, v in errors.items() if not v <= BOUND}
    assert not bad, f'{variant}: {len(bad)} of {len(errors)} over {BOUND:g}; worst {worst}'

"""Dtype policy under half-precision autocast, on fake CUDA with CPU autocast standing in for
CUDA autocast (a CPU-only torch runs CUDA autocast only on tensors that cannot record an
autograd graph; see fake_cuda.py): deformable sampling in the value's dtype (float16) or as a
float32 island (bfloat16, which mmcv's kernel lacks); every loss term float32 and finite;
matching costs float32; gradients and predictions finite.

Proven: what our code casts, under CPU autocast's op lists. Not proven: CUDA autocast's own
op lists (they differ for some ops) and the CUDA kernels' half-precision numbers.
"""
import pytest
import torch

from .conftest import VARIANTS, allowed, audit, in_library, run_audit

SAMPLING_DTYPE = {'fp16': torch.float16, 'bf16': torch.float32}


@pytest.mark.parametrize('precision', ['fp16', 'bf16'])
@pytest.mark.parametrize('variant', VARIANTS)
def test_autocast_dtype_policy(variant, precision):
    run = audit(variant, precision)
    assert set(run.loss_dtypes.values()) == {torch.float32}, run.loss_dtypes
    assert run.loss_finite and run.grads_finite and run.predict_finite
    costs = [e for e in run.events('sync', 'train') if allowed(e, {'HungarianAssigner.assign': ''})]
    assert costs and all(e.detail['dtype'] == torch.float32 for e in costs), costs
    for op in run.events('op'):
        if op.op != 'mmdet_ddetr.ms_deform_attn.default':
            continue
        value, _, _, loc, weights = op.detail['args'][:5]
        assert value['dtype'] == loc['dtype'] == weights['dtype'] == \
            SAMPLING_DTYPE[precision], op
    for call in run.ext.calls:
        assert call.args['value']['dtype'] == SAMPLING_DTYPE[precision], call


def test_planted_half_precision_loss_is_caught():
    def plant(model, ext):
        original = model.bbox_head.loss_by_feat
        model.bbox_head.loss_by_feat = lambda *a, **k: {
            n: v.half() for n, v in original(*a, **k).items()}  # the planted bug
        import contextlib
        return contextlib.nullcontext()

    run = run_audit('ddetr', 'fp16', plant)
    assert torch.float16 in set(run.loss_dtypes.values())

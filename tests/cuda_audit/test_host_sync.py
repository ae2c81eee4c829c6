"""Host synchronisations of a training step (loss, backward, divergence guard) and a predict on
fake CUDA: every device-to-host read (``.item()``, ``bool()``, ``.cpu()``, ``.tolist()``,
``.numpy()``, ``nonzero``, ``unique``, boolean indexing) is recorded with its stack.

Proven: which Python calls would read a CUDA tensor on the host, in our code and in the mmdet
code it calls. Not proven: syncs inside C++ (allocator, cuDNN) or in mmcv's CUDA-only loss
branch (mmdet's FocalLoss calls mmcv's sigmoid_focal_loss only when torch sees a GPU).
"""
import contextlib

import pytest
import torch

from .conftest import PRECISIONS, VARIANTS, allowed, audit, in_library, run_audit

#: Intended syncs: qualname on the stack -> why.
INTENDED = {
    'HungarianAssigner.assign': 'Hungarian matching runs on the host (scipy): one copy of the '
                                'cost matrix per image and decoder layer',
}
#: Found by this audit, not ours to fix here (mmdet code our loss calls); see test below.
KNOWN = {
    'DETRHead._get_targets_single': 'mmdet detr_head.py:433-436: nonzero + unique of the '
                                    'assignment per image and layer',
    'GIoULoss.forward': 'mmdet iou_loss.py:610: `not torch.any(weight > 0)`',
    'L1Loss.forward': 'mmdet smooth_l1_loss.py:156: `not torch.any(weight > 0)`',
}


def syncs(run, phase):
    return [e for e in run.events('sync', phase) if in_library(e)]


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('variant', VARIANTS)
def test_predict_makes_no_host_sync(variant, precision):
    found = syncs(audit(variant, precision), 'predict')
    assert not found, '\n'.join(map(str, found))


@pytest.mark.parametrize('precision', PRECISIONS)
@pytest.mark.parametrize('variant', VARIANTS)
def test_training_step_syncs_only_where_listed(variant, precision):
    """Intended and known syncs only; the divergence guard adds none."""
    run = audit(variant, precision)
    found = syncs(run, 'train')
    assert any(allowed(e, INTENDED) for e in found), 'matching sync not seen: audit blind?'
    assert not [e for e in found if 'DivergenceGuardHook.after_train_iter' in e.chain]
    other = [e for e in found if not allowed(e, {**INTENDED, **KNOWN})]
    assert not other, '\n'.join(map(str, other))


@pytest.mark.xfail(strict=True, reason='finding: mmdet DETRHead._get_targets_single (nonzero, '
                   'unique) and GIoULoss/L1Loss (torch.any(weight > 0)) sync the host in our '
                   'set_prediction_loss.py loss_by_feat_single (lines 61, 86, 89)')
@pytest.mark.parametrize('variant', ['ddetr', 'smca'])
def test_training_step_syncs_only_for_matching(variant):
    """Documented finding, left as a strict xfail on purpose (looked at for issue 23).

    The extra syncs are mmdet's: ``DETRHead._get_targets_single`` (``nonzero`` + ``unique`` of
    the assignment) and ``L1Loss`` / ``GIoULoss.forward`` (``not torch.any(weight > 0)``).
    Not replaced in our ``set_prediction_loss.py`` because:

    * the step cannot become sync-free: the Hungarian matching (INTENDED) copies the cost
      matrix to the host per image and decoder layer. ``get_targets``' syncs come right after
      that copy, when the GPU queue is already drained; ``any(weight > 0)`` waits for one
      layer's loss kernels, which the next layer's matching waits for anyway. The gain is a few
      launch latencies per layer, not overlap (a GPU profile would tell; none was measured);
    * removing them means re-implementing mmdet's ``_get_targets_single`` (masks and
      ``torch.where`` instead of indices) and bypassing the configured ``loss_bbox`` /
      ``loss_iou`` modules' ``forward`` for the exact L1Loss/GIoULoss types only: copied mmdet
      code and a second path per loss type;
    * ``num_pos`` / ``num_neg`` would become device tensors: ``num_pos + num_neg *
      bg_cls_weight`` is then float32 on the device instead of float64 on the host, so the
      classification normaliser (and the golden outputs) are not bit-identical once
      ``bg_cls_weight`` is not 0 (CrossEntropy heads).

    Flip this when mmdet's code goes sync-free or a GPU profile shows these syncs cost time.
    """
    found = syncs(audit(variant, 'fp32'), 'train')
    other = [e for e in found if not allowed(e, INTENDED)]
    assert not other, '\n'.join(map(str, other))


def test_planted_item_in_the_loss_is_caught():
    def plant(model, ext):
        head = model.bbox_head
        original = head.loss_by_feat

        def loss_with_item(*args, **kwargs):
            losses = original(*args, **kwargs)
            losses['loss_cls'].item()  # the planted bug
            return losses
        head.loss_by_feat = loss_with_item  # this model instance only
        return contextlib.nullcontext()

    run = run_audit('ddetr', 'fp32', plant)
    found = [e for e in syncs(run, 'train') if not allowed(e, {**INTENDED, **KNOWN})]
    assert [e.op for e in found] == ['aten._local_scalar_dense.default'], found

"""The set-prediction loss both families share (Deformable DETR and SMCA heads): the
Hungarian matching, which refuses a non-finite cost matrix, and the losses normalised as the
official criteria do (sum, then divide by the box count), in float32 under autocast; the
detections of ``predict`` come from :func:`.detections.topk_detections`."""
import contextlib
from typing import Iterator, List, Tuple, Union

import numpy as np
import torch
from mmengine.dist import is_distributed
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.models.losses import QualityFocalLoss
from mmdet.models.task_modules.assigners import hungarian_assigner
from mmdet.models.task_modules.assigners.hungarian_assigner import HungarianAssigner
from mmdet.registry import TASK_UTILS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import InstanceList, reduce_mean
from .detections import topk_detections

_HALF = (torch.float16, torch.bfloat16)


class NonFiniteCostError(FloatingPointError):
    """The matching costs hold a NaN/inf: the predictions of this iteration diverged."""


def _finite_linear_sum_assignment(cost):
    """scipy's ``linear_sum_assignment`` on a cost matrix known to be finite."""
    values = np.asarray(cost)
    if not np.isfinite(values).all():
        bad = int((~np.isfinite(values)).sum())
        raise NonFiniteCostError(
            f'Hungarian matching received {bad} non-finite costs of {values.size} '
            f'({values.shape[0]} predictions x {values.shape[1]} targets): the model\'s '
            'predictions are NaN/inf, i.e. training diverged (or the loaded weights hold '
            'NaN/inf). Lower the learning rate, keep gradient clipping on, and resume from a '
            'good checkpoint; see docs/troubleshooting.md.')
    return _scipy_linear_sum_assignment(cost)


_scipy_linear_sum_assignment = hungarian_assigner.linear_sum_assignment


@contextlib.contextmanager
def _checked_matching() -> Iterator[None]:
    # mmdet's assign() moves the cost to the host (its own sync) and calls the module-level
    # name; checking there costs no extra GPU synchronisation and copies none of mmdet's code.
    hungarian_assigner.linear_sum_assignment = _finite_linear_sum_assignment
    try:
        yield
    finally:
        hungarian_assigner.linear_sum_assignment = _scipy_linear_sum_assignment


@TASK_UTILS.register_module()
class FiniteCostHungarianAssigner(HungarianAssigner):
    """:class:`mmdet.models.task_modules.HungarianAssigner` that raises
    :class:`NonFiniteCostError` (what diverged and what to do) instead of scipy's "matrix
    contains invalid numeric entries" when a cost is NaN/inf. Same arguments and results."""

    def assign(self, *args, **kwargs):
        with _checked_matching():
            return super().assign(*args, **kwargs)


class SetPredictionLossMixin:
    """The set-prediction loss and the detections of a DETR-family head, numerically as the
    official code.

    Mixed into a subclass of mmdet's ``DETRHead`` (before it in the bases), it replaces
    ``loss_by_feat_single`` and ``_predict_by_feat_single``:

    * matching and losses run in at least float32, with autocast off: matching costs (cdist,
      GIoU) and the GIoU loss are unstable in half precision. Half-precision predictions are
      upcast; a float64 model keeps float64;
    * losses are summed and divided exactly by the normaliser. mmdet's mean reduction divides
      by ``avg_factor + eps`` (float32 eps), a ~1e-7 relative bias against the official
      normalisation;
    * the box normaliser is the number of target boxes, averaged over processes only when
      distributed (no host sync: it stays a tensor there), at least 1;
    * detections are the top-k (query, class) sigmoid scores (:func:`.topk_detections`).

    The host head provides ``get_targets``, ``loss_cls`` / ``loss_bbox`` / ``loss_iou``,
    ``bg_cls_weight``, ``sync_cls_avg_factor``, ``num_classes`` and ``test_cfg`` (all from
    ``DETRHead``).

    The classification loss takes (logits, labels, weights), as ``FocalLoss`` and
    ``CrossEntropyLoss`` do; mmdet's ``QualityFocalLoss`` needs IoU-weighted targets that
    ``DETRHead`` builds in a branch of its own ``loss_by_feat_single`` which this one
    replaces, so it is refused when the head is built.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if isinstance(self.loss_cls, QualityFocalLoss):
            raise ValueError(
                f"{type(self).__name__}: loss_cls=dict(type='QualityFocalLoss') is not "
                "supported (its IoU-weighted targets are not built here); use "
                "dict(type='FocalLoss', use_sigmoid=True, ...) as the papers do, or another "
                "classification loss on class labels such as 'CrossEntropyLoss'")

    def _average_over_processes(self, count: float, like: Tensor) -> Union[float, Tensor]:
        """``max(count, 1)``; when distributed, the mean over processes as a 0-d tensor of
        ``like``'s dtype (no ``.item()``: the loss never waits for the host)."""
        if is_distributed():
            return reduce_mean(like.new_tensor(float(count))).clamp(min=1)
        return max(count, 1)

    def loss_by_feat_single(self, cls_scores: Tensor, bbox_preds: Tensor,
                            batch_gt_instances: InstanceList,
                            batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """Classification, L1 and GIoU losses of one set of predictions (one decoder layer,
        or the encoder proposals), matched and computed in at least float32.

        Args:
            cls_scores (Tensor): (bs, num_preds, C) logits, any C (classes, classes + a
                no-object slot, or a single objectness channel).
            bbox_preds (Tensor): (bs, num_preds, 4) normalised (cx, cy, w, h).
            batch_gt_instances (list[InstanceData]): Targets (pixel xyxy ``bboxes``,
                ``labels`` < C).
            batch_img_metas (list[dict]): Image metas (``img_shape`` is used).

        Returns:
            tuple[Tensor, Tensor, Tensor]: weighted ``loss_cls``, ``loss_bbox`` (L1) and
            ``loss_iou`` (GIoU).
        """
        # Autocast would otherwise run the cost and loss matmuls (cdist, GIoU) in half
        # precision again, whatever the dtype of the inputs.
        with torch.autocast(cls_scores.device.type, enabled=False):
            return self._losses(_at_least_fp32(cls_scores), _at_least_fp32(bbox_preds),
                                batch_gt_instances, batch_img_metas)

    def _losses(self, cls_scores: Tensor, bbox_preds: Tensor,
                batch_gt_instances: InstanceList,
                batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """:meth:`loss_by_feat_single` in the dtype of its inputs (same arguments)."""
        num_preds, num_channels = cls_scores.shape[1:]
        (labels, label_weights, bbox_targets, bbox_weights, num_pos,
         num_neg) = self.get_targets(list(cls_scores), list(bbox_preds), batch_gt_instances,
                                     batch_img_metas)
        # get_targets marks unmatched predictions with num_classes; a narrower branch (the
        # objectness score) needs its own "one past the last channel" background index.
        labels = torch.cat(labels).clamp(max=num_channels)
        label_weights = torch.cat(label_weights)
        bbox_targets = torch.cat(bbox_targets)
        bbox_weights = torch.cat(bbox_weights)

        cls_avg_factor = num_pos + num_neg * self.bg_cls_weight
        if self.sync_cls_avg_factor:
            cls_avg_factor = self._average_over_processes(cls_avg_factor, cls_scores)
        else:
            cls_avg_factor = max(cls_avg_factor, 1)
        loss_cls = self.loss_cls(cls_scores.reshape(-1, num_channels), labels, label_weights,
                                 reduction_override='sum') / cls_avg_factor

        # Official num_boxes: the number of target boxes (averaged over processes), >= 1.
        num_boxes = self._average_over_processes(num_pos, cls_scores)
        # L1 on normalised boxes; GIoU on pixel boxes (GIoU is invariant to the per-axis image
        # scale, but mmdet's IoU losses expect absolute xyxy).
        img_scale = bbox_preds.new_tensor(
            [[m['img_shape'][1], m['img_shape'][0]] * 2 for m in batch_img_metas])
        img_scale = img_scale.repeat_interleave(num_preds, 0)
        bbox_preds = bbox_preds.reshape(-1, 4)
        loss_iou = self.loss_iou(bbox_cxcywh_to_xyxy(bbox_preds) * img_scale,
                                 bbox_cxcywh_to_xyxy(bbox_targets) * img_scale, bbox_weights,
                                 reduction_override='sum') / num_boxes
        loss_bbox = self.loss_bbox(bbox_preds, bbox_targets, bbox_weights,
                                   reduction_override='sum') / num_boxes
        return loss_cls, loss_bbox, loss_iou

    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top-k (query, class) pairs of one image (:func:`.topk_detections`).

        Args:
            cls_score (Tensor): (num_queries, C) logits of the last layer.
            bbox_pred (Tensor): (num_queries, 4) normalised (cx, cy, w, h).
            img_meta (dict): ``img_shape`` and, with ``rescale``, ``scale_factor``.
            rescale (bool): Return boxes in original-image pixels.

        Returns:
            InstanceData: ``bboxes`` (k, 4) xyxy, ``scores`` (k,), ``labels`` (k,), sorted by
            score.
        """
        bboxes, scores, labels = (t[0] for t in topk_detections(
            self, cls_score[None], bbox_pred[None], img_meta['img_shape'][:2]))
        if rescale:
            if img_meta.get('scale_factor') is None:
                raise ValueError('rescale=True needs img_meta["scale_factor"] (set by the '
                                 'Resize transform); pass rescale=False for input-size boxes')
            bboxes = bboxes / bboxes.new_tensor(img_meta['scale_factor']).repeat(2)
        results = InstanceData()
        results.bboxes = bboxes
        results.scores = scores
        results.labels = labels
        return results


def _at_least_fp32(t: Tensor) -> Tensor:
    """``t`` in float32 if it is half precision, else unchanged (float64 stays float64)."""
    return t.float() if t.dtype in _HALF else t


__all__ = ['FiniteCostHungarianAssigner', 'NonFiniteCostError', 'SetPredictionLossMixin']

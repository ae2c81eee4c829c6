"""The set-prediction maths shared by the Deformable DETR and SMCA heads: losses normalised
as the official criteria do (sum, then divide by the box count) and the official top-k
post-processing over (query, class) pairs."""
from typing import List, Tuple, Union

import torch
from mmengine.dist import is_distributed
from mmengine.structures import InstanceData
from torch import Tensor

from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import InstanceList, reduce_mean


class OfficialCriterionMixin:
    """Losses and detections of a DETR-family head, numerically as the official code.

    Mixed into a subclass of mmdet's ``DETRHead`` (before it in the bases), it replaces
    ``loss_by_feat_single`` and ``_predict_by_feat_single``:

    * losses are summed and divided exactly by the normaliser. mmdet's mean reduction divides
      by ``avg_factor + eps`` (float32 eps), a ~1e-7 relative bias against the official
      normalisation;
    * the box normaliser is the number of target boxes, averaged over processes only when
      distributed (no host sync: it stays a tensor there), at least 1;
    * detections are the top-k (query, class) sigmoid scores, ``k = test_cfg.max_per_img``.

    The host head provides ``get_targets``, ``loss_cls`` / ``loss_bbox`` / ``loss_iou``,
    ``bg_cls_weight``, ``sync_cls_avg_factor``, ``num_classes`` and ``test_cfg`` (all from
    ``DETRHead``). ``test_cfg.clip_boxes`` (default True, mmdet's behaviour) clamps boxes to
    the image; the official PostProcess does not clamp.
    """

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
        or the encoder proposals).

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

    def _ranked_channels(self) -> int:
        """Leading logit channels ranked at inference (the object classes)."""
        return self.num_classes

    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top-k (query, class) pairs of one image, as the official PostProcess.

        Args:
            cls_score (Tensor): (num_queries, C) logits of the last layer; the first
                :meth:`_ranked_channels` are ranked.
            bbox_pred (Tensor): (num_queries, 4) normalised (cx, cy, w, h).
            img_meta (dict): ``img_shape`` and, with ``rescale``, ``scale_factor``.
            rescale (bool): Return boxes in original-image pixels.

        Returns:
            InstanceData: ``bboxes`` (k, 4) xyxy, ``scores`` (k,), ``labels`` (k,), sorted by
            score.
        """
        num_channels = self._ranked_channels()
        scores = cls_score[:, :num_channels].sigmoid().reshape(-1)
        k = min(self.test_cfg.get('max_per_img', len(cls_score)), scores.numel())
        scores, indexes = scores.topk(k)
        labels = indexes % num_channels
        bboxes = bbox_cxcywh_to_xyxy(bbox_pred[indexes // num_channels])
        img_h, img_w = img_meta['img_shape'][:2]
        bboxes = bboxes * bboxes.new_tensor([img_w, img_h, img_w, img_h])
        if self.test_cfg.get('clip_boxes', True):
            bboxes[:, 0::2].clamp_(min=0, max=img_w)
            bboxes[:, 1::2].clamp_(min=0, max=img_h)
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


__all__ = ['OfficialCriterionMixin']

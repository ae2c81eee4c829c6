"""The one post-processing of both heads: top-k over (query, class) pairs, as the official
``PostProcess``, for a batch of images of one input size.

``predict`` (each head's ``_predict_by_feat_single``, one image at a time since the images of a
batch have their own sizes) and the ONNX graph (:class:`mmdet_ddetr.deployment.
ExportableDetector`, one size for the whole batch) both call :func:`topk_detections`, so an
exported model ranks, clips and counts its detections exactly as ``predict`` does.
"""
from typing import Tuple

import torch
from torch import Tensor, nn

from mmdet.structures.bbox import bbox_cxcywh_to_xyxy


def ranked_channels(head: nn.Module) -> int:
    """How many leading logit channels are ranked: the object classes.

    SMCA's official layout has one more logit, a "no-object" slot that is never a positive
    target; it is ranked like a class only with ``test_cfg.keep_no_object=True`` (what the
    official ``PostProcess`` does). For sigmoid heads without that slot ``cls_out_channels``
    is ``num_classes``, so the setting changes nothing there.

    Args:
        head (nn.Module): A head with ``num_classes``, ``cls_out_channels`` and ``test_cfg``.

    Returns:
        int: The number of ranked channels.
    """
    test_cfg = head.test_cfg or {}
    if test_cfg.get('keep_no_object', False):
        return head.cls_out_channels
    return head.num_classes


def topk_detections(head: nn.Module, cls_scores: Tensor, bbox_preds: Tensor,
                    img_hw: Tuple[int, int]) -> Tuple[Tensor, Tensor, Tensor]:
    """Top-k (query, class) sigmoid scores of a batch, with their boxes in input pixels.

    ``k = test_cfg.max_per_img`` (at most queries x ranked classes). ``test_cfg.clip_boxes``
    (default True, mmdet's behaviour) clamps the boxes to the image; the official
    ``PostProcess`` does not clamp.

    Args:
        head (nn.Module): The head (reads ``num_classes``, ``cls_out_channels`` and
            ``test_cfg``; see :func:`ranked_channels`).
        cls_scores (Tensor): (bs, num_queries, cls_out_channels) logits of the last layer.
        bbox_preds (Tensor): (bs, num_queries, 4) normalised (cx, cy, w, h).
        img_hw (tuple[int, int]): (h, w) of every image of the batch, in input pixels; ints or
            symbolic ints (export with a dynamic image size).

    Returns:
        tuple[Tensor, Tensor, Tensor]: boxes (bs, k, 4) xyxy in input pixels, scores (bs, k)
        and labels (bs, k) int64, sorted by score.
    """
    test_cfg = head.test_cfg or {}
    num_channels = ranked_channels(head)
    scores_all = cls_scores[..., :num_channels].sigmoid().flatten(1)
    k = min(test_cfg.get('max_per_img', cls_scores.shape[1]), scores_all.shape[1])
    scores, indexes = scores_all.topk(k, dim=1)
    labels = indexes % num_channels
    queries = torch.div(indexes, num_channels, rounding_mode='floor')
    boxes = bbox_cxcywh_to_xyxy(bbox_preds.gather(1, queries[..., None].expand(-1, -1, 4)))
    img_h, img_w = img_hw
    x = boxes[..., 0::2] * img_w
    y = boxes[..., 1::2] * img_h
    if test_cfg.get('clip_boxes', True):
        # The upper bound as a tensor op: img_w / img_h may be symbolic sizes (dynamic export).
        x = x.clamp(min=0).minimum(x.new_ones(()) * img_w)
        y = y.clamp(min=0).minimum(y.new_ones(()) * img_h)
    boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), -1)
    return boxes, scores, labels


__all__ = ['ranked_channels', 'topk_detections']

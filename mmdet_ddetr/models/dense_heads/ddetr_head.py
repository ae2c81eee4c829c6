"""Prediction head of Deformable DETR: per-decoder-layer class and box branches, set-prediction
losses (Hungarian matching; sigmoid focal, L1 and GIoU), and the encoder-proposal loss of the
two-stage variant."""
from typing import Dict, List, Optional, Tuple

import torch
from mmengine.dist import is_distributed
from mmengine.structures import InstanceData
from torch import Tensor
from torch.nn import Linear

from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.registry import MODELS
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.structures import SampleList
from mmdet.utils import InstanceList, OptInstanceList, reduce_mean


_HALF = (torch.float16, torch.bfloat16)


@MODELS.register_module()
class DDETRHead(DeformableDETRHead):
    """Deformable DETR head.

    Same branches, initialisation and matching as mmdet's ``DeformableDETRHead``, plus:

    * ``enc_cls_channels``: width of the encoder-proposal classification branch (the last of
      ``cls_branches`` in two-stage). 1 gives the class-agnostic objectness branch; it is
      always a separate layer then, even when the decoder branches are shared.
    * losses are computed in at least float32 whatever the autocast dtype (matching costs and GIoU are
      unstable in half precision), with any branch width (the background index is "one past the
      last channel").
    * ``test_cfg.clip_boxes`` (default True, mmdet's behaviour): clamp boxes to the image; the
      official PostProcess does not clamp.

    Args:
        enc_cls_channels (int, optional): Width of the encoder classification branch; defaults
            to ``num_classes`` (the official layout).
        *args, **kwargs: As for :class:`mmdet.models.dense_heads.DeformableDETRHead`.
    """

    def __init__(self, *args, enc_cls_channels: Optional[int] = None, **kwargs) -> None:
        self.enc_cls_channels = enc_cls_channels
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        super()._init_layers()
        if (self.as_two_stage and self.enc_cls_channels is not None
                and self.enc_cls_channels != self.cls_out_channels):
            self.cls_branches[-1] = Linear(self.embed_dims, self.enc_cls_channels)

    def loss_by_feat(self, all_layers_cls_scores: Tensor, all_layers_bbox_preds: Tensor,
                     enc_cls_scores: Optional[Tensor], enc_bbox_preds: Optional[Tensor],
                     batch_gt_instances: InstanceList, batch_img_metas: List[dict],
                     batch_gt_instances_ignore: OptInstanceList = None) -> Dict[str, Tensor]:
        """Losses of every decoder layer (``d{i}.`` prefixes) and of the encoder proposals
        (``enc_`` prefix), computed in float32.

        Args:
            all_layers_cls_scores (Tensor): (num_layers, bs, num_queries, num_classes) logits.
            all_layers_bbox_preds (Tensor): (num_layers, bs, num_queries, 4) normalised
                (cx, cy, w, h).
            enc_cls_scores (Tensor | None): (bs, num_tokens, enc_cls_channels), two-stage only.
            enc_bbox_preds (Tensor | None): (bs, num_tokens, 4), two-stage only.
            batch_gt_instances (list[InstanceData]): ``bboxes`` (xyxy, pixels) and ``labels``.
            batch_img_metas (list[dict]): Image metas (``img_shape`` is used).
            batch_gt_instances_ignore: Unsupported (DETR-style heads ignore nothing).

        Returns:
            dict[str, Tensor]: The loss terms.
        """
        def fp32(t: Optional[Tensor]) -> Optional[Tensor]:
            # upcast half precision only: a float64 model keeps float64 losses
            return t.float() if t is not None and t.dtype in _HALF else t

        # Autocast would otherwise run the cost/loss matmuls (cdist, GIoU) in half precision.
        with torch.autocast(all_layers_cls_scores.device.type, enabled=False):
            return super().loss_by_feat(fp32(all_layers_cls_scores),
                                        fp32(all_layers_bbox_preds), fp32(enc_cls_scores),
                                        fp32(enc_bbox_preds), batch_gt_instances,
                                        batch_img_metas, batch_gt_instances_ignore)

    def loss_by_feat_single(self, cls_scores: Tensor, bbox_preds: Tensor,
                            batch_gt_instances: InstanceList,
                            batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """Classification, L1 and GIoU losses of one set of predictions.

        Args:
            cls_scores (Tensor): (bs, num_preds, C) logits, any C (classes or objectness).
            bbox_preds (Tensor): (bs, num_preds, 4) normalised (cx, cy, w, h).
            batch_gt_instances (list[InstanceData]): Targets; labels must be < C.
            batch_img_metas (list[dict]): Image metas.

        Returns:
            tuple[Tensor, Tensor, Tensor]: ``loss_cls``, ``loss_bbox`` (L1), ``loss_iou``.
        """
        num_imgs, num_preds, num_channels = cls_scores.shape
        (labels, label_weights, bbox_targets, bbox_weights, num_pos,
         num_neg) = self.get_targets(list(cls_scores), list(bbox_preds), batch_gt_instances,
                                     batch_img_metas)
        labels = torch.cat(labels)
        # get_targets marks unmatched predictions with num_classes; a narrower branch (the
        # objectness score) needs its own "one past the last channel" background index.
        labels = labels.clamp(max=num_channels)
        label_weights = torch.cat(label_weights)
        bbox_targets = torch.cat(bbox_targets)
        bbox_weights = torch.cat(bbox_weights)

        # Official normalisation: the number of target boxes (averaged over GPUs), at least 1.
        cls_avg_factor = num_pos + num_neg * self.bg_cls_weight
        if self.sync_cls_avg_factor and is_distributed():
            cls_avg_factor = reduce_mean(cls_scores.new_tensor([cls_avg_factor])).clamp(min=1)
        else:
            cls_avg_factor = max(cls_avg_factor, 1)
        # Sum, then divide exactly: mmdet's mean reduction divides by avg_factor + float32 eps,
        # a relative bias of ~1e-7 / num_boxes against the official normalisation.
        loss_cls = self.loss_cls(cls_scores.reshape(-1, num_channels), labels, label_weights,
                                 reduction_override='sum') / cls_avg_factor

        if is_distributed():
            num_pos = reduce_mean(cls_scores.new_tensor([num_pos])).clamp(min=1).item()
        else:
            num_pos = max(num_pos, 1)

        # L1 on normalised boxes; GIoU on pixel boxes (GIoU is invariant to the per-axis image
        # scale, but mmdet's IoU losses expect absolute xyxy).
        img_scale = bbox_preds.new_tensor(
            [[m['img_shape'][1], m['img_shape'][0]] * 2 for m in batch_img_metas])
        img_scale = img_scale.repeat_interleave(num_preds, 0)
        bbox_preds = bbox_preds.reshape(-1, 4)
        loss_iou = self.loss_iou(bbox_cxcywh_to_xyxy(bbox_preds) * img_scale,
                                 bbox_cxcywh_to_xyxy(bbox_targets) * img_scale, bbox_weights,
                                 reduction_override='sum') / num_pos
        loss_bbox = self.loss_bbox(bbox_preds, bbox_targets, bbox_weights,
                                   reduction_override='sum') / num_pos
        return loss_cls, loss_bbox, loss_iou

    def forward(self, hidden_states: Tensor, references: List[Tensor],
                enc_outputs_class: Optional[Tensor] = None,
                enc_outputs_coord: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Per-layer class logits (num_layers, bs, num_queries, num_classes) and boxes
        (num_layers, bs, num_queries, 4); the encoder proposal outputs are accepted (the
        detector hands over one dict, e.g. to ``_forward`` / FLOPs counting) and unused."""
        return super().forward(hidden_states, references)

    def predict(self, hidden_states: Tensor, references: List[Tensor],
                batch_data_samples: SampleList, rescale: bool = True,
                enc_outputs_class: Optional[Tensor] = None,
                enc_outputs_coord: Optional[Tensor] = None) -> InstanceList:
        """Detections of the last decoder layer; the encoder proposal outputs (two-stage) are
        accepted so the detector can hand over one dict, and are not used."""
        return super().predict(hidden_states, references, batch_data_samples, rescale)

    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top-k (query, class) pairs of one image, as in the official PostProcess.

        Args:
            cls_score (Tensor): (num_queries, num_classes) logits of the last layer.
            bbox_pred (Tensor): (num_queries, 4) normalised (cx, cy, w, h).
            img_meta (dict): ``img_shape`` and, with ``rescale``, ``scale_factor``.
            rescale (bool): Return boxes in original-image pixels.

        Returns:
            InstanceData: ``scores`` (k,), ``labels`` (k,), ``bboxes`` (k, 4) xyxy.
        """
        k = min(self.test_cfg.get('max_per_img', len(cls_score)), cls_score.numel())
        scores, indexes = cls_score.sigmoid().view(-1).topk(k)
        labels = indexes % self.num_classes
        bboxes = bbox_cxcywh_to_xyxy(bbox_pred[indexes // self.num_classes])
        img_h, img_w = img_meta['img_shape']
        bboxes = bboxes * bboxes.new_tensor([img_w, img_h, img_w, img_h])
        if self.test_cfg.get('clip_boxes', True):
            bboxes[:, 0::2].clamp_(min=0, max=img_w)
            bboxes[:, 1::2].clamp_(min=0, max=img_h)
        if rescale:
            bboxes = bboxes / bboxes.new_tensor(img_meta['scale_factor']).repeat(2)
        results = InstanceData()
        results.bboxes = bboxes
        results.scores = scores
        results.labels = labels
        return results


__all__ = ['DDETRHead']

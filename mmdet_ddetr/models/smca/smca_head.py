"""SMCA box head: DETR head whose box centres are predicted relative to the Gaussian centre."""
from typing import Dict, List, Tuple

import torch
from mmengine.model import bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet.models.dense_heads import DETRHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy
from mmdet.utils import InstanceList, reduce_mean


@MODELS.register_module()
class SMCAHead(DETRHead):
    """Head of SMCA-DETR.

    Differences from :class:`DETRHead` (all taken from the official code):

    * boxes: ``sigmoid(reg(h_l) + [centre_logits, 0, 0])`` for every decoder layer ``l``, i.e.
      (cx, cy) are offsets from the query's Gaussian centre in logit space;
    * classification: sigmoid focal loss; with ``with_no_object_logit`` (official layout) there
      are ``num_classes + 1`` logits whose last one is a "no-object" slot that is never a positive
      target (it only learns to stay low) and is ignored at inference unless
      ``test_cfg.keep_no_object=True`` (the official PostProcess ranks it like a class);
    * ``test_cfg.clip_boxes`` (default True, mmdet behaviour) can be turned off: the official
      PostProcess does not clip.

    Args:
        num_classes: Object classes (without background).
        with_no_object_logit: Keep the official ``num_classes + 1`` logit layout (needed to load
            official checkpoints).
        **kwargs: :class:`DETRHead` arguments (losses, train_cfg, test_cfg, ...).
    """

    def __init__(self, num_classes: int, with_no_object_logit: bool = True, **kwargs) -> None:
        self.with_no_object_logit = with_no_object_logit
        loss_cls = kwargs.get('loss_cls', None)
        if loss_cls is None or not loss_cls.get('use_sigmoid', False):
            raise ValueError('SMCAHead needs a sigmoid classification loss '
                             "(e.g. dict(type='FocalLoss', use_sigmoid=True))")
        super().__init__(num_classes=num_classes, **kwargs)

    def _init_layers(self) -> None:
        """DETR head layers; the class branch gets the extra no-object logit when enabled."""
        if self.with_no_object_logit:
            self.cls_out_channels = self.num_classes + 1
        super()._init_layers()

    def init_weights(self) -> None:
        """Class bias at prior 0.01 (focal-loss practice, as the official code); the regression
        branch keeps PyTorch's default Linear init, as the official ``bbox_embed`` MLP."""
        super().init_weights()
        nn.init.constant_(self.fc_cls.bias, bias_init_with_prob(0.01))

    def forward(self, hidden_states: Tensor, references: Tensor) -> Tuple[Tensor, Tensor]:
        """Predict class logits and boxes of every decoder layer.

        Args:
            hidden_states: (num_layers, bs, num_queries, dim) decoder outputs (post-normed).
            references: (bs, num_queries, 2) Gaussian-centre logits (x, y), shared by layers.

        Returns:
            tuple[Tensor, Tensor]: class logits (num_layers, bs, num_queries, cls_out_channels)
            and normalised (cx, cy, w, h) boxes (num_layers, bs, num_queries, 4).
        """
        layers_cls_scores = self.fc_cls(hidden_states)
        reg = self.fc_reg(self.activate(self.reg_ffn(hidden_states)))
        reg = torch.cat([reg[..., :2] + references, reg[..., 2:]], dim=-1)
        return layers_cls_scores, reg.sigmoid()

    def loss(self, hidden_states: Tensor, references: Tensor,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of every decoder layer (mmdet names: ``loss_cls``, ``d0.loss_cls``, ...)."""
        batch_gt_instances = [s.gt_instances for s in batch_data_samples]
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states, references)
        return self.loss_by_feat(*outs, batch_gt_instances, batch_img_metas)

    def loss_and_predict(self, hidden_states: Tensor, references: Tensor,
                         batch_data_samples: SampleList) -> Tuple[dict, InstanceList]:
        """Losses and detections from one forward of the head."""
        batch_gt_instances = [s.gt_instances for s in batch_data_samples]
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states, references)
        losses = self.loss_by_feat(*outs, batch_gt_instances, batch_img_metas)
        predictions = self.predict_by_feat(*outs, batch_img_metas=batch_img_metas)
        return losses, predictions

    def predict(self, hidden_states: Tensor, references: Tensor,
                batch_data_samples: SampleList, rescale: bool = True) -> InstanceList:
        """Detections from the last decoder layer."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states[-1:], references)
        return self.predict_by_feat(*outs, batch_img_metas=batch_img_metas, rescale=rescale)

    def loss_by_feat_single(self, cls_scores: Tensor, bbox_preds: Tensor,
                            batch_gt_instances: InstanceList,
                            batch_img_metas: List[dict]) -> Tuple[Tensor, Tensor, Tensor]:
        """Losses of one decoder layer: ``sum / num_gt`` exactly as the official criterion.

        Same targets and normalisers as :meth:`DETRHead.loss_by_feat_single`, but the sums are
        divided here instead of by ``weight_reduce_loss``, which divides by ``avg_factor + eps``
        (float32 eps): a ~1e-7 relative bias that is pointless once ``avg_factor >= 1``.

        Args:
            cls_scores: (bs, num_queries, cls_out_channels) logits.
            bbox_preds: (bs, num_queries, 4) normalised (cx, cy, w, h).
            batch_gt_instances: Ground truth per image (pixel xyxy ``bboxes``, ``labels``).
            batch_img_metas: Meta per image (``img_shape``).

        Returns:
            tuple[Tensor, Tensor, Tensor]: weighted ``loss_cls``, ``loss_bbox``, ``loss_iou``.
        """
        num_imgs = cls_scores.size(0)
        (labels_list, label_weights_list, bbox_targets_list, bbox_weights_list, num_total_pos,
         num_total_neg) = self.get_targets([cls_scores[i] for i in range(num_imgs)],
                                           [bbox_preds[i] for i in range(num_imgs)],
                                           batch_gt_instances, batch_img_metas)
        labels = torch.cat(labels_list, 0)
        label_weights = torch.cat(label_weights_list, 0)
        bbox_targets = torch.cat(bbox_targets_list, 0)
        bbox_weights = torch.cat(bbox_weights_list, 0)

        cls_avg_factor = num_total_pos * 1.0 + num_total_neg * self.bg_cls_weight
        if self.sync_cls_avg_factor:
            cls_avg_factor = reduce_mean(cls_scores.new_tensor([cls_avg_factor])).item()
        cls_avg_factor = max(cls_avg_factor, 1)
        loss_cls = self.loss_cls(
            cls_scores.reshape(-1, self.cls_out_channels), labels, label_weights,
            reduction_override='sum') / cls_avg_factor

        # Official num_boxes: number of ground-truth boxes (averaged over GPUs), at least 1.
        num_total_pos = torch.clamp(
            reduce_mean(cls_scores.new_tensor([num_total_pos])), min=1).item()
        factors = torch.cat([
            pred.new_tensor([meta['img_shape'][1], meta['img_shape'][0]] * 2).expand(
                pred.size(0), 4) for meta, pred in zip(batch_img_metas, bbox_preds)
        ])
        bbox_preds = bbox_preds.reshape(-1, 4)
        # GIoU on pixel boxes (scale invariant), L1 on normalised (cx, cy, w, h).
        loss_iou = self.loss_iou(
            bbox_cxcywh_to_xyxy(bbox_preds) * factors, bbox_cxcywh_to_xyxy(bbox_targets) *
            factors, bbox_weights, reduction_override='sum') / num_total_pos
        loss_bbox = self.loss_bbox(
            bbox_preds, bbox_targets, bbox_weights, reduction_override='sum') / num_total_pos
        return loss_cls, loss_bbox, loss_iou

    def _get_targets_single(self, cls_score: Tensor, bbox_pred: Tensor,
                            gt_instances: InstanceData, img_meta: dict) -> tuple:
        """DETR targets; unmatched queries get a label past the last logit.

        mmdet marks background with ``num_classes``; with the extra no-object logit that index
        is a real channel, so it is moved to ``cls_out_channels`` (an all-zero one-hot target,
        exactly the official ``labels`` matrix where no channel is ever positive for
        unmatched queries).
        """
        targets = super()._get_targets_single(cls_score, bbox_pred, gt_instances, img_meta)
        labels = targets[0]
        if self.with_no_object_logit:
            labels = labels.masked_fill(labels == self.num_classes, self.cls_out_channels)
        return (labels, ) + tuple(targets[1:])

    def _predict_by_feat_single(self, cls_score: Tensor, bbox_pred: Tensor, img_meta: dict,
                                rescale: bool = True) -> InstanceData:
        """Top-k over (query, class) sigmoid scores, as the official PostProcess.

        Args:
            cls_score: (num_queries, cls_out_channels) logits of the last layer.
            bbox_pred: (num_queries, 4) normalised (cx, cy, w, h) boxes.
            img_meta: Image meta (``img_shape``, ``scale_factor``).
            rescale: Map boxes back to the original image with ``scale_factor``.

        Returns:
            InstanceData: ``bboxes`` (k, 4) xyxy, ``scores`` (k,), ``labels`` (k,), sorted by
            score.
        """
        keep_no_object = self.test_cfg.get('keep_no_object', False)
        num_channels = self.cls_out_channels if keep_no_object else self.num_classes
        scores_all = cls_score[:, :num_channels].sigmoid().reshape(-1)
        max_per_img = min(self.test_cfg.get('max_per_img', cls_score.size(0)), scores_all.numel())
        scores, indexes = scores_all.topk(max_per_img)
        det_labels = indexes % num_channels
        bbox_index = torch.div(indexes, num_channels, rounding_mode='floor')
        img_h, img_w = img_meta['img_shape'][:2]
        det_bboxes = bbox_cxcywh_to_xyxy(bbox_pred[bbox_index])
        det_bboxes = det_bboxes * det_bboxes.new_tensor([img_w, img_h, img_w, img_h])
        if self.test_cfg.get('clip_boxes', True):
            det_bboxes[:, 0::2].clamp_(min=0, max=img_w)
            det_bboxes[:, 1::2].clamp_(min=0, max=img_h)
        if rescale:
            assert img_meta.get('scale_factor') is not None
            det_bboxes /= det_bboxes.new_tensor(img_meta['scale_factor']).repeat((1, 2))
        results = InstanceData()
        results.bboxes = det_bboxes
        results.scores = scores
        results.labels = det_labels
        return results

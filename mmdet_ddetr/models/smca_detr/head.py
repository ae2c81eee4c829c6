"""SMCA box head: DETR head whose box centres are predicted relative to the Gaussian centre."""
from typing import Dict, Optional, Tuple

import torch
from mmengine.model import bias_init_with_prob
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet.models.dense_heads import DETRHead
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmdet.utils import InstanceList

from ..common.set_prediction_loss import SetPredictionLossMixin


@MODELS.register_module()
class SMCAHead(SetPredictionLossMixin, DETRHead):
    """Head of SMCA-DETR.

    Differences from :class:`DETRHead` (all taken from the official code):

    * boxes: ``sigmoid(reg(h_l) + [centre_logits, 0, 0])`` for every decoder layer ``l``, i.e.
      (cx, cy) are offsets from the query's Gaussian centre in logit space;
    * classification: sigmoid focal loss; with ``with_no_object_logit`` (official layout) there
      are ``num_classes + 1`` logits whose last one is a "no-object" slot that is never a positive
      target (it only learns to stay low) and is ignored at inference unless
      ``test_cfg.keep_no_object=True`` (the official PostProcess ranks it like a class; see
      :func:`..common.detections.ranked_channels`);
    * losses and detections as the official code (:class:`SetPredictionLossMixin`: matching
      and losses in float32 under autocast, exact ``sum / num_boxes``, top-k over (query,
      class) pairs, ``test_cfg.clip_boxes``).

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
                             "(e.g. dict(type='FocalLoss', use_sigmoid=True)); it is the head "
                             "of type='SMCADETR' / 'SMCAMultiScaleDETR' (mmdet's DETR uses "
                             "DETRHead)")
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

    def forward(self, hidden_states: Tensor,
                references: Optional[Tensor] = None) -> Tuple[Tensor, Tensor]:
        """Predict class logits and boxes of every decoder layer.

        Args:
            hidden_states: (num_layers, bs, num_queries, dim) decoder outputs (post-normed).
            references: (bs, num_queries, 2) Gaussian-centre logits (x, y), shared by layers.

        Returns:
            tuple[Tensor, Tensor]: class logits (num_layers, bs, num_queries, cls_out_channels)
            and normalised (cx, cy, w, h) boxes (num_layers, bs, num_queries, 4).
        """
        if references is None:  # mmdet's DETR passes only hidden_states
            raise TypeError(
                "SMCAHead predicts boxes relative to the SMCA decoder's Gaussian centres, which "
                "this detector does not pass: use it with type='SMCADETR' or "
                "'SMCAMultiScaleDETR' (mmdet's DETR goes with mmdet's DETRHead).")
        layers_cls_scores = self.fc_cls(hidden_states)
        reg = self.fc_reg(self.activate(self.reg_ffn(hidden_states)))
        reg = torch.cat([reg[..., :2] + references, reg[..., 2:]], dim=-1)
        return layers_cls_scores, reg.sigmoid()

    def loss(self, hidden_states: Tensor, references: Optional[Tensor] = None, *,
             batch_data_samples: SampleList) -> Dict[str, Tensor]:
        """Losses of every decoder layer (mmdet names: ``loss_cls``, ``d0.loss_cls``, ...)."""
        batch_gt_instances = [s.gt_instances for s in batch_data_samples]
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states, references)
        return self.loss_by_feat(*outs, batch_gt_instances, batch_img_metas)

    def loss_and_predict(self, hidden_states: Tensor, references: Optional[Tensor] = None, *,
                         batch_data_samples: SampleList) -> Tuple[dict, InstanceList]:
        """Losses and detections from one forward of the head."""
        batch_gt_instances = [s.gt_instances for s in batch_data_samples]
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states, references)
        losses = self.loss_by_feat(*outs, batch_gt_instances, batch_img_metas)
        predictions = self.predict_by_feat(*outs, batch_img_metas=batch_img_metas)
        return losses, predictions

    def predict(self, hidden_states: Tensor, references: Optional[Tensor] = None, *,
                batch_data_samples: SampleList, rescale: bool = True) -> InstanceList:
        """Detections from the last decoder layer."""
        batch_img_metas = [s.metainfo for s in batch_data_samples]
        outs = self(hidden_states[-1:], references)
        return self.predict_by_feat(*outs, batch_img_metas=batch_img_metas, rescale=rescale)

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

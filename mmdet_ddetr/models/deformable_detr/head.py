"""Prediction head of Deformable DETR: per-decoder-layer class and box branches, set-prediction
losses (Hungarian matching; sigmoid focal, L1 and GIoU), and the encoder-proposal loss of the
two-stage variant."""
from typing import Dict, List, Optional

import torch
from torch import Tensor
from torch.nn import Linear

from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.registry import MODELS
from mmdet.utils import InstanceList, OptInstanceList
from ..common.build_checks import check_built_by_detector
from ..common.set_prediction_loss import OfficialCriterionMixin


_HALF = (torch.float16, torch.bfloat16)
# What DDETR derives from its transformer and always passes (mmdet's DETR does not pass them,
# mmdet's DeformableDETR not embed_dims: with the 256 default the head would not fit the model).
DETECTOR_ARGS = ('embed_dims', 'num_pred_layer', 'share_pred_layer', 'as_two_stage')


@MODELS.register_module()
class DDETRHead(OfficialCriterionMixin, DeformableDETRHead):
    """Deformable DETR head.

    Same branches, initialisation and matching as mmdet's ``DeformableDETRHead``, plus:

    * ``enc_cls_channels``: width of the encoder-proposal classification branch (the last of
      ``cls_branches`` in two-stage). 1 gives the class-agnostic objectness branch; it is
      always a separate layer then, even when the decoder branches are shared.
    * losses are computed in at least float32 whatever the autocast dtype (matching costs and GIoU are
      unstable in half precision), with any branch width (the background index is "one past the
      last channel").
    * losses and detections as the official code (:class:`OfficialCriterionMixin`: exact
      ``sum / num_boxes``, top-k over (query, class) pairs, ``test_cfg.clip_boxes``).

    Args:
        enc_cls_channels (int, optional): Width of the encoder classification branch; defaults
            to ``num_classes`` (the official layout).
        *args, **kwargs: As for :class:`mmdet.models.dense_heads.DeformableDETRHead`.
    """

    def __init__(self, *args, enc_cls_channels: Optional[int] = None, **kwargs) -> None:
        # embed_dims may also come positionally, after num_classes (DETRHead's order)
        given = list(kwargs) + (['embed_dims'] if len(args) > 1 else [])
        check_built_by_detector('DDETRHead', 'DDETR', given, DETECTOR_ARGS)
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


__all__ = ['DDETRHead']

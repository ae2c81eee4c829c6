"""Prediction head of Deformable DETR: per-decoder-layer class and box branches, set-prediction
losses (Hungarian matching; sigmoid focal, L1 and GIoU), and the encoder-proposal loss of the
two-stage variant."""
from typing import Optional

from torch.nn import Linear

from mmdet.models.dense_heads import DeformableDETRHead
from mmdet.registry import MODELS
from ..common.build_checks import check_built_by_detector
from ..common.set_prediction_loss import SetPredictionLossMixin

# What DDETR derives from its transformer and always passes (mmdet's DETR does not pass them,
# mmdet's DeformableDETR not embed_dims: with the 256 default the head would not fit the model).
DETECTOR_ARGS = ('embed_dims', 'num_pred_layer', 'share_pred_layer', 'as_two_stage')


@MODELS.register_module()
class DDETRHead(SetPredictionLossMixin, DeformableDETRHead):
    """Deformable DETR head.

    Same branches, initialisation and matching as mmdet's ``DeformableDETRHead``, plus:

    * ``enc_cls_channels``: width of the encoder-proposal classification branch (the last of
      ``cls_branches`` in two-stage). 1 gives the class-agnostic objectness branch; it is
      always a separate layer then, even when the decoder branches are shared.
    * losses and detections as the official code (:class:`SetPredictionLossMixin`: matching
      and losses in float32 under autocast, any branch width (the background index is "one
      past the last channel"), exact ``sum / num_boxes``, top-k over (query, class) pairs,
      ``test_cfg.clip_boxes``).

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


__all__ = ['DDETRHead']

"""Prediction head of Deformable DETR: per-decoder-layer class and box branches, set-prediction
losses (Hungarian matching; sigmoid focal, L1 and GIoU), and the encoder-proposal loss of the
two-stage variant (the proposals' own branches are :class:`.two_stage.DDETRProposalGenerator`'s)."""
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

    Same branches (one per decoder layer), initialisation and matching as mmdet's
    ``DeformableDETRHead``; the encoder-proposal loss takes the scores and boxes of
    :class:`.two_stage.DDETRProposalGenerator`, which owns their branches. Plus:

    * losses and detections as the official code (:class:`SetPredictionLossMixin`: matching
      and losses in float32 under autocast, any branch width (the background index is "one
      past the last channel"), exact ``sum / num_boxes``, top-k over (query, class) pairs,
      ``test_cfg.clip_boxes``).

    Args:
        *args, **kwargs: As for :class:`mmdet.models.dense_heads.DeformableDETRHead`.
    """

    def __init__(self, *args, **kwargs) -> None:
        # embed_dims may also come positionally, after num_classes (DETRHead's order)
        given = list(kwargs) + (['embed_dims'] if len(args) > 1 else [])
        check_built_by_detector('DDETRHead', 'DDETR', given, DETECTOR_ARGS)
        super().__init__(*args, **kwargs)


__all__ = ['DDETRHead']

"""Deformable DETR (arXiv 2010.04159), one module per paper concept.

:mod:`.detector` (``DDETR``: levels -> encoder -> queries -> decoder -> head) runs
:mod:`.encoder` and :mod:`.decoder`, both on :mod:`.deformable_attention`; iterative box
refinement (in :mod:`.decoder`, which runs it) and :mod:`.two_stage` (encoder proposals as
queries) are the two variants; :mod:`.head` holds the class/box branches and the losses
(shared maths in :mod:`mmdet_ddetr.models.common.set_prediction_loss`).
"""
from .decoder import (DDETRDecoder, DDETRDecoderLayer, apply_box_delta, refine_reference,
                      scale_to_levels)
from .deformable_attention import MSDeformAttention, safe_im2col_step
from .detector import DDETR
from .encoder import DDETREncoder, DDETREncoderLayer, encoder_reference_points
from .head import DDETRHead
from .two_stage import DDETRProposalGenerator

__all__ = [
    'MSDeformAttention', 'safe_im2col_step', 'DDETREncoderLayer', 'DDETREncoder',
    'encoder_reference_points', 'DDETRDecoderLayer', 'DDETRDecoder', 'apply_box_delta',
    'refine_reference', 'scale_to_levels', 'DDETRProposalGenerator', 'DDETR', 'DDETRHead'
]

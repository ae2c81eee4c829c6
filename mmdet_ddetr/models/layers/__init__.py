from .box_refinement import apply_box_delta, refine_reference, scale_to_levels
from .ddetr_decoder import DDETRDecoder, DDETRDecoderLayer
from .ddetr_encoder import DDETREncoder, DDETREncoderLayer, encoder_reference_points
# The module fast_dropout stays reachable as a module (its function is not re-exported here).
from .fast_dropout import FastDropout, use_fast_dropout
from .lean_attention import LeanMultiheadAttention
from .lean_detr_layers import (LeanDetrTransformerDecoderLayer, LeanDetrTransformerEncoder,
                               LeanDetrTransformerEncoderLayer)
from .ms_deform_attn import MSDeformAttention, safe_im2col_step
from .proposal_generator import DDETRProposalGenerator

__all__ = [
    'MSDeformAttention', 'safe_im2col_step', 'DDETREncoderLayer', 'DDETREncoder',
    'encoder_reference_points', 'DDETRDecoderLayer', 'DDETRDecoder',
    'apply_box_delta', 'refine_reference', 'scale_to_levels', 'DDETRProposalGenerator',
    'FastDropout', 'use_fast_dropout', 'LeanMultiheadAttention',
    'LeanDetrTransformerEncoderLayer', 'LeanDetrTransformerEncoder',
    'LeanDetrTransformerDecoderLayer'
]

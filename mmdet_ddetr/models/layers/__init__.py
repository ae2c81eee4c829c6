from .box_refinement import apply_box_delta, refine_reference, scale_to_levels
from .ddetr_decoder import DDETRDecoder, DDETRDecoderLayer
from .ddetr_encoder import DDETREncoder, DDETREncoderLayer, encoder_reference_points
from .efficient import (LeanDetrTransformerDecoderLayer, LeanDetrTransformerEncoder,
                        LeanDetrTransformerEncoderLayer, LeanMultiheadAttention)
from .ms_deform_attn import MSDeformAttention, safe_im2col_step
from .proposal_generator import DDETRProposalGenerator

__all__ = [
    'MSDeformAttention', 'safe_im2col_step', 'DDETREncoderLayer', 'DDETREncoder',
    'encoder_reference_points', 'DDETRDecoderLayer', 'DDETRDecoder',
    'apply_box_delta', 'refine_reference', 'scale_to_levels', 'DDETRProposalGenerator',
    'LeanMultiheadAttention',
    'LeanDetrTransformerEncoderLayer', 'LeanDetrTransformerEncoder',
    'LeanDetrTransformerDecoderLayer'
]

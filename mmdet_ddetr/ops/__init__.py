"""Low-level operators (speed and deployment code, kept apart from the paper's layers).

Importing this package registers the ``torch.ops.mmdet_ddetr`` operators.
"""
from .ms_deform_attn_op import (export_decompositions, level_shapes, ms_deform_attn,
                                ms_deform_attn_backward, ms_deform_attn_forward, ms_deform_sample,
                                ms_deform_sample_backward, register_inductor_decomposition,
                                safe_im2col_step)
from .ms_deform_corners import ms_deform_sample_corners

__all__ = ['ms_deform_attn', 'ms_deform_attn_forward', 'ms_deform_attn_backward',
           'safe_im2col_step', 'level_shapes', 'export_decompositions', 'register_inductor_decomposition',
           'ms_deform_sample', 'ms_deform_sample_backward', 'ms_deform_sample_corners']

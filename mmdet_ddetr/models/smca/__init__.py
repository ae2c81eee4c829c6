"""SMCA-DETR (arXiv 2101.07448): spatially modulated co-attention, single- and multi-scale.

One paper concept per module: :mod:`.gaussian_prior` (log G), :mod:`.scale_selection`
(alpha), :mod:`.smca_layers` (encoder/decoder layers), :mod:`.smca_head` (box head),
:mod:`.smca_detr` (detectors); official checkpoint keys -> ours in
:mod:`mmdet_ddetr.converters.smca`.
"""
from .gaussian_prior import (OFFICIAL_SCALE_TYPES, SCALE_TYPES, SMCAGaussianPrior,
                             canonical_scale_type)
from .scale_selection import SMCAScaleSelection
from .smca_detr import SMCADETR, SMCAMultiScaleDETR
from .smca_head import SMCAHead
from .smca_layers import (SMCAMultiScaleDecoder, SMCAMultiScaleDecoderLayer,
                          SMCAMultiScaleEncoder, SMCATransformerDecoder,
                          SMCATransformerDecoderLayer)

__all__ = [
    'SCALE_TYPES', 'OFFICIAL_SCALE_TYPES', 'canonical_scale_type', 'SMCAGaussianPrior',
    'SMCAScaleSelection', 'SMCATransformerDecoderLayer', 'SMCATransformerDecoder',
    'SMCAMultiScaleEncoder', 'SMCAMultiScaleDecoderLayer', 'SMCAMultiScaleDecoder',
    'SMCAHead', 'SMCADETR', 'SMCAMultiScaleDETR'
]

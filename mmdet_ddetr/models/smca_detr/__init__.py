"""SMCA-DETR (arXiv 2101.07448): spatially modulated co-attention, single- and multi-scale.

One paper concept per module: :mod:`.gaussian_prior` (log G), :mod:`.scale_selection`
(alpha), :mod:`.head` (box head); the two variants are siblings over :mod:`.base`:
:mod:`.single_scale` (the official model) and :mod:`.multi_scale` (the paper's Sec. 3.3).
Official checkpoint keys -> ours: :mod:`mmdet_ddetr.converters.smca`.
"""
from .base import SMCADecoderBase, SMCADecoderLayerBase, SMCADETRBase
from .gaussian_prior import (OFFICIAL_SCALE_TYPES, SCALE_TYPES, SMCAGaussianPrior,
                             canonical_scale_type)
from .multi_scale import (SMCAMultiScaleDecoder, SMCAMultiScaleDecoderLayer, SMCAMultiScaleDETR,
                          SMCAMultiScaleEncoder)
from .scale_selection import SMCAScaleSelection
from .single_scale import SMCADETR, SMCATransformerDecoder, SMCATransformerDecoderLayer
from .head import SMCAHead

__all__ = [
    'SCALE_TYPES', 'OFFICIAL_SCALE_TYPES', 'canonical_scale_type', 'SMCAGaussianPrior',
    'SMCAScaleSelection', 'SMCADecoderLayerBase', 'SMCADecoderBase', 'SMCADETRBase',
    'SMCATransformerDecoderLayer', 'SMCATransformerDecoder', 'SMCADETR',
    'SMCAMultiScaleEncoder', 'SMCAMultiScaleDecoderLayer', 'SMCAMultiScaleDecoder',
    'SMCAMultiScaleDETR', 'SMCAHead'
]

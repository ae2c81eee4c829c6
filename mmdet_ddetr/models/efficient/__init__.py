"""Not paper components: drop-in replacements of mmcv/mmdet layers with the same parameters,
state-dict keys and results, faster on CPU (see docs/benchmarks.md)."""
from .lean_attention import LeanMultiheadAttention
from .lean_detr_layers import (LeanDetrTransformerDecoderLayer, LeanDetrTransformerEncoder,
                               LeanDetrTransformerEncoderLayer)

__all__ = [
    'LeanMultiheadAttention', 'LeanDetrTransformerEncoderLayer', 'LeanDetrTransformerEncoder',
    'LeanDetrTransformerDecoderLayer'
]

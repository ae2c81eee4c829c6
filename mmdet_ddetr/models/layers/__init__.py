from .efficient import (LeanDetrTransformerDecoderLayer, LeanDetrTransformerEncoder,
                        LeanDetrTransformerEncoderLayer, LeanMultiheadAttention)

__all__ = [
    'LeanMultiheadAttention', 'LeanDetrTransformerEncoderLayer', 'LeanDetrTransformerEncoder',
    'LeanDetrTransformerDecoderLayer'
]

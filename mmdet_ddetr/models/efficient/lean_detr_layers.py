"""DETR encoder/decoder layers built on :class:`LeanMultiheadAttention` and fast dropout.

mmdet's ``DetrTransformerEncoderLayer`` / ``DetrTransformerDecoderLayer`` with the attention
and FFN dropouts swapped: same config arguments, same submodules in the same construction order
(so the same initial weights for a seed), same state-dict keys, same outputs; faster on CPU.
"""
from mmengine.model import ModuleList

from mmdet.models.layers.transformer import (DetrTransformerDecoderLayer,
                                             DetrTransformerEncoder,
                                             DetrTransformerEncoderLayer)
from mmdet.registry import MODELS

from ..common import add_ffn_and_norms, build_module


@MODELS.register_module()
class LeanDetrTransformerEncoderLayer(DetrTransformerEncoderLayer):
    """``DetrTransformerEncoderLayer`` whose self-attention ``type`` defaults to
    :class:`LeanMultiheadAttention`."""

    def _init_layers(self) -> None:
        self.self_attn = build_module(self.self_attn_cfg, 'LeanMultiheadAttention')
        self.embed_dims = self.self_attn.embed_dims
        add_ffn_and_norms(self, 2)


@MODELS.register_module()
class LeanDetrTransformerEncoder(DetrTransformerEncoder):
    """``DetrTransformerEncoder`` whose layer ``type`` defaults to
    :class:`LeanDetrTransformerEncoderLayer` (without mmdet's fairscale activation
    checkpointing, ``num_cp``)."""

    def _init_layers(self) -> None:
        if self.num_cp > 0:
            raise ValueError('LeanDetrTransformerEncoder does not support num_cp (activation '
                             "checkpointing); set encoder type='DetrTransformerEncoder' to use it")
        self.layers = ModuleList([
            build_module(self.layer_cfg, 'LeanDetrTransformerEncoderLayer')
            for _ in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims


@MODELS.register_module()
class LeanDetrTransformerDecoderLayer(DetrTransformerDecoderLayer):
    """``DetrTransformerDecoderLayer`` whose self- and cross-attention ``type`` default to
    :class:`LeanMultiheadAttention`."""

    def _init_layers(self) -> None:
        self.self_attn = build_module(self.self_attn_cfg, 'LeanMultiheadAttention')
        self.cross_attn = build_module(self.cross_attn_cfg, 'LeanMultiheadAttention')
        self.embed_dims = self.self_attn.embed_dims
        add_ffn_and_norms(self, 3)

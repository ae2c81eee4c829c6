"""The post-norm DETR layers both families build on, with every sub-module built from config.

mmdet's ``DetrTransformerEncoderLayer`` / ``DetrTransformerDecoderLayer`` construct mmcv's
``MultiheadAttention`` and ``FFN`` directly, so a config cannot choose another attention (a
``type`` key is an error there). These subclasses build the same sub-modules in the same order
through :func:`build_module`: by default mmcv's ``MultiheadAttention`` and ``FFN`` with plain
``nn.Dropout`` -- the reference path, equal to mmdet's layers in weights, state-dict keys and
outputs -- and whatever ``type`` a config names otherwise (e.g. the CPU speed devices of
:mod:`mmdet_ddetr.models.efficient`).
"""
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList

from mmdet.models.layers.transformer import (DetrTransformerDecoderLayer,
                                             DetrTransformerEncoder,
                                             DetrTransformerEncoderLayer)
from mmdet.registry import MODELS

from .build import build_module


def add_ffn_and_norms(layer: BaseModule, num_norms: int) -> None:
    """Give a DETR-style layer (with ``ffn_cfg``, ``norm_cfg`` and ``embed_dims`` set) its
    ``ffn`` (``type`` defaults to mmcv's ``FFN``) and ``num_norms`` post-norms, in mmdet's
    order (so the same initial weights for a seed and the same state-dict keys as mmdet's
    layers)."""
    layer.ffn = build_module(layer.ffn_cfg, 'FFN')
    layer.norms = ModuleList(
        [build_norm_layer(layer.norm_cfg, layer.embed_dims)[1] for _ in range(num_norms)])


@MODELS.register_module()
class PostNormEncoderLayer(DetrTransformerEncoderLayer):
    """mmdet's ``DetrTransformerEncoderLayer`` (self-attention -> norm -> FFN -> norm) with its
    sub-modules built from config: the one encoder layer of both families. SMCA's encoders
    keep the default attention; Deformable DETR's encoder makes ``MSDeformAttention`` the
    default (registry name ``DDETREncoderLayer``, see
    :mod:`mmdet_ddetr.models.deformable_detr.encoder`).

    Args:
        self_attn_cfg (dict): Attention config; ``type`` defaults to mmcv's
            ``MultiheadAttention``.
        ffn_cfg (dict): FFN config; ``type`` defaults to mmcv's ``FFN``.
        norm_cfg (dict): Norm config. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation config.
    """

    def _init_layers(self) -> None:
        self.self_attn = build_module(self.self_attn_cfg, 'MultiheadAttention')
        self.embed_dims = self.self_attn.embed_dims
        add_ffn_and_norms(self, 2)


@MODELS.register_module()
class PostNormEncoder(DetrTransformerEncoder):
    """mmdet's ``DetrTransformerEncoder`` whose layer ``type`` defaults to
    :class:`PostNormEncoderLayer` (without mmdet's fairscale activation checkpointing,
    ``num_cp``, which only wraps mmdet's own layer class).

    Args:
        num_layers (int): Number of layers.
        layer_cfg (dict): Config of every layer.
        num_cp (int): Must be 0 (see above).
        init_cfg (dict, optional): Initialisation config.
    """

    def _init_layers(self) -> None:
        if self.num_cp > 0:
            raise ValueError('PostNormEncoder does not support num_cp (activation '
                             "checkpointing); set encoder type='DetrTransformerEncoder' to use it")
        self.layers = ModuleList([
            build_module(self.layer_cfg, 'PostNormEncoderLayer') for _ in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims


@MODELS.register_module()
class PostNormDecoderLayer(DetrTransformerDecoderLayer):
    """mmdet's ``DetrTransformerDecoderLayer`` (self-attention -> norm -> cross-attention ->
    norm -> FFN -> norm) with its sub-modules built from config.

    Args:
        self_attn_cfg (dict): Self-attention config; ``type`` defaults to mmcv's
            ``MultiheadAttention``.
        cross_attn_cfg (dict): Cross-attention config; ``type`` defaults to mmcv's
            ``MultiheadAttention``.
        ffn_cfg (dict): FFN config; ``type`` defaults to mmcv's ``FFN``.
        norm_cfg (dict): Norm config. Defaults to LayerNorm.
        init_cfg (dict, optional): Initialisation config.
    """

    def _init_layers(self) -> None:
        self.self_attn = build_module(self.self_attn_cfg, 'MultiheadAttention')
        self.cross_attn = build_module(self.cross_attn_cfg, 'MultiheadAttention')
        self.embed_dims = self.self_attn.embed_dims
        add_ffn_and_norms(self, 3)


__all__ = ['add_ffn_and_norms', 'PostNormEncoderLayer', 'PostNormEncoder', 'PostNormDecoderLayer']

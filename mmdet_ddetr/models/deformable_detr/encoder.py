"""Deformable DETR encoder (paper Sec. 4.1): every pixel of every level attends, through
multi-scale deformable attention, to a few points around its own position on all levels.

Its layer is the post-norm encoder layer both families share,
:class:`~mmdet_ddetr.models.common.PostNormEncoderLayer` (self-attention -> norm -> FFN ->
norm): the layers differed only by the attention they built, so the encoder makes
``MSDeformAttention`` the default of ``self_attn_cfg`` instead (:func:`deformable_layer_cfg`).
``DDETREncoderLayer`` stays a registry name for it, with the same default and the same
state-dict keys (``self_attn``, ``ffn``, ``norms.0/1``).
"""
import copy
import inspect
from typing import Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from mmdet.models.layers.transformer import DetrTransformerEncoderLayer
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType

from ..common import PostNormEncoderLayer, build_module

_MMDET_SELF_ATTN_DEFAULT = inspect.signature(
    DetrTransformerEncoderLayer.__init__).parameters['self_attn_cfg'].default


def deformable_layer_cfg(layer_cfg: OptConfigType) -> dict:
    """``layer_cfg`` (deep-copied) with its ``self_attn_cfg.type`` defaulting to
    ``MSDeformAttention``; the config's own ``type``, if any, is kept."""
    cfg = copy.deepcopy(dict(layer_cfg or {}))
    # A missing self_attn_cfg keeps the layer's (mmdet's) default arguments.
    attn_cfg = dict(cfg.get('self_attn_cfg', _MMDET_SELF_ATTN_DEFAULT))
    attn_cfg.setdefault('type', 'MSDeformAttention')
    cfg['self_attn_cfg'] = attn_cfg
    return cfg


@MODELS.register_module(name='DDETREncoderLayer')
def DDETREncoderLayer(**layer_cfg) -> PostNormEncoderLayer:  # noqa: N802  (registry name)
    """Registry name kept for configs and code that build ``type='DDETREncoderLayer'``: a
    :class:`~mmdet_ddetr.models.common.PostNormEncoderLayer` with deformable self-attention
    (``MSDeformAttention`` unless ``self_attn_cfg`` names another type).

    Args:
        **layer_cfg: ``self_attn_cfg``, ``ffn_cfg``, ``norm_cfg``, ``init_cfg``.

    Returns:
        PostNormEncoderLayer: the layer.
    """
    return PostNormEncoderLayer(**deformable_layer_cfg(layer_cfg))


@MODELS.register_module()
class DDETREncoder(BaseModule):
    """Stack of deformable encoder layers over the flattened multi-scale feature tokens.

    Args:
        num_layers (int): Number of layers (paper: 6).
        layer_cfg (dict): Config of each layer; ``type`` defaults to ``PostNormEncoderLayer``,
            ``self_attn_cfg.type`` to ``MSDeformAttention``.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: ConfigType,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'encoder num_layers must be >= 1, got {num_layers}')
        self.num_layers = num_layers
        self.layers = ModuleList(
            [build_module(deformable_layer_cfg(layer_cfg), 'PostNormEncoderLayer')
             for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Optional[Tensor],
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                spatial_shape_list: Sequence[Tuple[int, int]], **kwargs) -> Tensor:
        """Encode the multi-scale tokens.

        Args:
            query (Tensor): (bs, num_tokens, dim) flattened features of all levels.
            query_pos (Tensor): (bs, num_tokens, dim) sine + level embeddings.
            key_padding_mask (Tensor | None): (bs, num_tokens), True at padding.
            spatial_shapes (Tensor): (num_levels, 2) (H_l, W_l).
            level_start_index (Tensor): (num_levels,).
            valid_ratios (Tensor): (bs, num_levels, 2) valid (w, h) fraction of each level.
            spatial_shape_list (list[tuple[int, int]]): ``spatial_shapes`` as Python ints.

        Returns:
            Tensor: memory, (bs, num_tokens, dim).
        """
        reference_points = encoder_reference_points(spatial_shape_list, valid_ratios)
        for layer in self.layers:
            query = layer(query=query, query_pos=query_pos, key_padding_mask=key_padding_mask,
                          spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                          valid_ratios=valid_ratios, reference_points=reference_points,
                          spatial_shape_list=spatial_shape_list, **kwargs)
        return query


def encoder_reference_points(spatial_shape_list: Sequence[Tuple[int, int]],
                             valid_ratios: Tensor) -> Tensor:
    """Reference point of every encoder token, expressed on every level.

    Pixel centres ``(i + 0.5)`` are normalised by the level's *valid* size, so that a token keeps
    pointing at the same image location on every level although padding differs per level; the
    per-level multiplication by the valid ratios then maps back to padded coordinates. The grid is
    built in float32, as in the official code (this keeps float64 runs bit-comparable).

    Args:
        spatial_shape_list (list[tuple[int, int]]): (H_l, W_l) of each level.
        valid_ratios (Tensor): (bs, num_levels, 2) valid (w, h) fraction of each level.

    Returns:
        Tensor: (bs, num_tokens, num_levels, 2) normalised (x, y).
    """
    device = valid_ratios.device
    per_level = []
    for lvl, (h, w) in enumerate(spatial_shape_list):
        # arange + 0.5 equals linspace(0.5, h - 0.5, h) bit for bit (exact in float32) and,
        # unlike linspace's int ``steps``, keeps a symbolic h under torch.compile/export.
        ref_y, ref_x = torch.meshgrid(
            torch.arange(h, dtype=torch.float32, device=device) + 0.5,
            torch.arange(w, dtype=torch.float32, device=device) + 0.5,
            indexing='ij')
        ref_y = ref_y.reshape(-1)[None] / (valid_ratios[:, None, lvl, 1] * h)
        ref_x = ref_x.reshape(-1)[None] / (valid_ratios[:, None, lvl, 0] * w)
        per_level.append(torch.stack((ref_x, ref_y), -1))
    reference_points = torch.cat(per_level, 1)
    return reference_points[:, :, None] * valid_ratios[:, None]


__all__ = ['deformable_layer_cfg', 'DDETREncoderLayer', 'DDETREncoder', 'encoder_reference_points']

"""Deformable DETR decoder (paper Sec. 4.1): object queries self-attend (ordinary multi-head
attention) and then cross-attend to the encoder memory through multi-scale deformable attention
around their reference point or box.

Iterative bounding box refinement (Sec. 4.2 and App. A.4) lives here too, since the decoder runs
it: each decoder layer ``d`` predicts a box *relative to* its reference in inverse-sigmoid space,

    b^d = sigmoid(delta^d + sigmoid^-1(b^(d-1))),

and with refinement the next layer's reference is that prediction, detached, so gradients of one
layer's box loss do not flow back through the references of the layers before it
(:func:`apply_box_delta`, :func:`refine_reference`).
"""
from typing import Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from mmdet.models.layers.transformer import DetrTransformerDecoderLayer, inverse_sigmoid
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType

from ..common import add_ffn_and_norms, build_module


# Iterative bounding box refinement (paper Sec. 4.2, App. A.4).

def apply_box_delta(delta: Tensor, reference: Tensor) -> Tensor:
    """Turn a regression output into a normalised box around ``reference``:
    ``sigmoid(delta + sigmoid^-1(reference))``.

    Args:
        delta (Tensor): (..., 4) raw regression output (cx, cy, w, h) in logit space.
        reference (Tensor): (..., 2) reference point (x, y) or (..., 4) reference box
            (cx, cy, w, h), normalised to [0, 1] of the valid image region.

    Returns:
        Tensor: (..., 4) sigmoid-normalised (cx, cy, w, h). A point reference shifts only the
        centre; a box reference shifts all four coordinates.
    """
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    if reference.shape[-1] != 2:
        raise ValueError('a reference is a point (x, y) or a box (cx, cy, w, h); got last dim '
                         f'{reference.shape[-1]}')
    centre = delta[..., :2] + inverse_sigmoid(reference)
    return torch.cat([centre, delta[..., 2:]], -1).sigmoid()


def refine_reference(delta: Tensor, reference: Tensor) -> Tensor:
    """Next layer's reference: the refined box, detached from the graph."""
    return apply_box_delta(delta, reference).detach()


def scale_to_levels(reference: Tensor, valid_ratios: Tensor) -> Tensor:
    """Express a reference given relative to the valid region on every (padded) level.

    Args:
        reference (Tensor): (bs, num_queries, 2 | 4).
        valid_ratios (Tensor): (bs, num_levels, 2) valid (w, h) fraction of each level.

    Returns:
        Tensor: (bs, num_queries, num_levels, 2 | 4); a box's (w, h) scale like its centre.
    """
    if reference.shape[-1] == 4:
        valid_ratios = valid_ratios.repeat(1, 1, 2)
    return reference[:, :, None] * valid_ratios[:, None]


@MODELS.register_module()
class DDETRDecoderLayer(DetrTransformerDecoderLayer):
    """Post-norm decoder layer: self-attention -> norm -> deformable cross-attention -> norm ->
    FFN -> norm (``norms.0/1/2``; the official code names them ``norm2/norm1/norm3``).

    Args:
        self_attn_cfg (dict): Self-attention config; ``type`` defaults to mmcv's
            ``MultiheadAttention``.
        cross_attn_cfg (dict): Cross-attention config; ``type`` defaults to
            ``MSDeformAttention``.
        ffn_cfg (dict): FFN config; ``type`` defaults to mmcv's ``FFN``.
        norm_cfg (dict): Norm config. Defaults to LayerNorm.
    """

    def _init_layers(self) -> None:
        self.self_attn = build_module(self.self_attn_cfg, 'MultiheadAttention')
        self.cross_attn = build_module(self.cross_attn_cfg, 'MSDeformAttention')
        self.embed_dims = self.self_attn.embed_dims
        add_ffn_and_norms(self, 3)


@MODELS.register_module()
class DDETRDecoder(BaseModule):
    """Stack of deformable decoder layers, optionally with iterative box refinement.

    Args:
        num_layers (int): Number of layers (paper: 6).
        layer_cfg (dict): Config of each layer; ``type`` defaults to ``DDETRDecoderLayer``.
        return_intermediate (bool): Return every layer's output (needed for the auxiliary
            losses). Defaults to True.
        post_norm_cfg (dict, optional): Must be None: Deformable DETR has no final decoder norm.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, num_layers: int, layer_cfg: ConfigType,
                 return_intermediate: bool = True, post_norm_cfg: OptConfigType = None,
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_layers < 1:
            raise ValueError(f'decoder num_layers must be >= 1, got {num_layers}')
        if post_norm_cfg is not None:
            raise ValueError('DDETRDecoder has no final norm (the official decoder has none); '
                             'remove post_norm_cfg from the decoder config')
        self.num_layers = num_layers
        self.return_intermediate = return_intermediate
        self.layers = ModuleList(
            [build_module(layer_cfg, 'DDETRDecoderLayer') for _ in range(num_layers)])
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, value: Tensor,
                key_padding_mask: Optional[Tensor], reference_points: Tensor,
                spatial_shapes: Tensor, level_start_index: Tensor, valid_ratios: Tensor,
                spatial_shape_list: Sequence[Tuple[int, int]],
                reg_branches: Optional[nn.ModuleList] = None,
                **kwargs) -> Tuple[Tensor, Tensor]:
        """Decode the object queries.

        Args:
            query (Tensor): (bs, num_queries, dim) content queries.
            query_pos (Tensor): (bs, num_queries, dim) positional queries.
            value (Tensor): (bs, num_tokens, dim) encoder memory.
            key_padding_mask (Tensor | None): (bs, num_tokens), True at padding.
            reference_points (Tensor): (bs, num_queries, 2) points (x, y) or
                (bs, num_queries, 4) boxes (cx, cy, w, h), relative to the valid region.
            spatial_shapes (Tensor): (num_levels, 2) (H_l, W_l).
            level_start_index (Tensor): (num_levels,).
            valid_ratios (Tensor): (bs, num_levels, 2).
            spatial_shape_list (list[tuple[int, int]]): ``spatial_shapes`` as Python ints.
            reg_branches (nn.ModuleList, optional): Per-layer box branches; given only with
                iterative box refinement.

        Returns:
            tuple[Tensor, Tensor]: hidden states (num_layers, bs, num_queries, dim) and the
            reference each layer *ended* with (num_layers, bs, num_queries, 2 | 4) — without
            refinement, copies of the initial reference (the last layer's dimensions only
            when ``return_intermediate`` is False).
        """
        output = query
        states, references = [], []
        for layer_id, layer in enumerate(self.layers):
            output = layer(output, query_pos=query_pos, value=value,
                           key_padding_mask=key_padding_mask, spatial_shapes=spatial_shapes,
                           level_start_index=level_start_index, valid_ratios=valid_ratios,
                           reference_points=scale_to_levels(reference_points, valid_ratios),
                           spatial_shape_list=spatial_shape_list, **kwargs)
            if reg_branches is not None:
                reference_points = refine_reference(reg_branches[layer_id](output),
                                                    reference_points)
            if self.return_intermediate:
                states.append(output)
                references.append(reference_points)
        if self.return_intermediate:
            return torch.stack(states), torch.stack(references)
        return output[None], reference_points[None]


__all__ = [
    'apply_box_delta', 'refine_reference', 'scale_to_levels', 'DDETRDecoderLayer', 'DDETRDecoder'
]

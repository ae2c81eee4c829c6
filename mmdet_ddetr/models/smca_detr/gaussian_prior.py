"""SMCA's spatial prior: the log of a Gaussian-like weight map around each query's centre.

Paper (arXiv 2101.07448, eq. 4-5): for a query ``q`` and head ``h`` the co-attention logits get
``log G(i, j) = -(s_w (i - c_w)^2 + s_h (j - c_h)^2) / beta`` added before the softmax, where
``c = centre + head_offset`` and ``s`` are predicted from the decoder embedding. This module
computes exactly that additive term for one decoder layer; it knows nothing about attention.
"""
from typing import Optional, Sequence, Tuple

import torch
from mmcv.cnn import Linear
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdet.registry import MODELS

# Canonical scale parameterisations and how many scale values each head needs.
# 'fixed' (official type1): s = 1; 'head' (type2): one s per head; 'head_xy' (type3, official
# default): (s_x, s_y) per head; 'head_xy_cross' (type4): (s_x, s_y, s_xy) with an extra
# dx^2 * dy^2 term.
SCALE_TYPES = {'fixed': 0, 'head': 1, 'head_xy': 2, 'head_xy_cross': 3}
# The official code names them type1..type4 (``--dynamic_scale``); both spellings are accepted.
OFFICIAL_SCALE_TYPES = {
    'type1': 'fixed',
    'type2': 'head',
    'type3': 'head_xy',
    'type4': 'head_xy_cross'
}


def canonical_scale_type(scale_type: str) -> str:
    """Map an official ``typeN`` name or a canonical name to the canonical name.

    Raises:
        ValueError: for an unknown name (so that a bad config fails at build time).
    """
    name = OFFICIAL_SCALE_TYPES.get(scale_type, scale_type)
    if name not in SCALE_TYPES:
        raise ValueError(
            f'Unknown SMCA scale_type {scale_type!r}; expected one of '
            f'{sorted(SCALE_TYPES)} or the official {sorted(OFFICIAL_SCALE_TYPES)}.')
    return name


def cell_grid(spatial_shape: Sequence[int], device: torch.device,
              dtype: torch.dtype) -> Tuple[Tensor, Tensor]:
    """Integer cell coordinates of a feature map, as the official code builds them.

    The official grid is ``meshgrid(arange(h), arange(w)).float()``: cell *indices* without the
    +0.5 centre offset, created in float32 (exact integers, so the cast is exact too).

    Args:
        spatial_shape: ``(H, W)`` of the (padded) feature map.
        device: Device of the result.
        dtype: Dtype of the result.

    Returns:
        tuple[Tensor, Tensor]: x coordinates of shape (W,) and y coordinates of shape (H,).
    """
    h, w = int(spatial_shape[0]), int(spatial_shape[1])
    xs = torch.arange(w, device=device, dtype=torch.float32).to(dtype)
    ys = torch.arange(h, device=device, dtype=torch.float32).to(dtype)
    return xs, ys


@MODELS.register_module()
class SMCAGaussianPrior(BaseModule):
    """Head-specific Gaussian log-prior of one SMCA decoder layer.

    Each head moves the shared centre by a predicted offset (``offset_fc``) and, depending on
    ``scale_type``, widens/narrows the Gaussian with predicted scales (``scale_fc``, squared so
    that they stay non-negative). The result is ``-dist / smooth`` (``smooth`` is the paper's
    beta), to be *added* to the attention logits after the key-padding mask and before softmax.

    Args:
        embed_dims: Channels of the query features the offsets/scales are predicted from.
        num_heads: Attention heads of the modulated co-attention.
        scale_type: One of ``SCALE_TYPES`` (or official ``type1``..``type4``).
        smooth: The bandwidth beta; larger values flatten the prior. Official default 8.
        shared_heads: Ablation switch: one offset/scale shared by all heads (head-shared
            modulation) instead of head-specific ones (the paper's multi-head modulation).
        smooth_ref_cells: None (official) keeps beta in feature cells. A number R makes beta
            relative to the map: ``beta * (min(H, W) / R) ** 2`` on an H x W map, so the prior
            covers the same fraction of the image whatever the map size (R = 25 keeps beta
            on COCO's ~25 x 34 C5 maps and shrinks it on small ones).
        enabled: Ablation switch: False adds nothing to the logits (log G = 0, plain DETR
            co-attention) and builds no offset/scale layers.
        init_cfg: Usual mmengine init config (the scale layer has a fixed init, see
            :meth:`init_weights`).
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_heads: int = 8,
                 scale_type: str = 'head_xy',
                 smooth: float = 8.0,
                 shared_heads: bool = False,
                 smooth_ref_cells: Optional[float] = None,
                 enabled: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_heads <= 0 or embed_dims <= 0:
            raise ValueError(f'embed_dims ({embed_dims}) and num_heads ({num_heads}) must be > 0')
        if smooth <= 0:
            raise ValueError(f'smooth (beta) must be > 0, got {smooth}')
        if smooth_ref_cells is not None and smooth_ref_cells <= 0:
            raise ValueError(f'smooth_ref_cells must be > 0 or None, got {smooth_ref_cells}')
        self.smooth_ref_cells = smooth_ref_cells
        self.enabled = enabled
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.scale_type = canonical_scale_type(scale_type)
        self.smooth = float(smooth)
        self.shared_heads = shared_heads
        # Number of independent (offset, scale) sets: 1 when heads share the modulation.
        self.num_groups = 1 if shared_heads else num_heads
        self.num_scales = SCALE_TYPES[self.scale_type]
        # Official point2: per-head (dx, dy) offsets in feature-cell units, x first.
        self.offset_fc = Linear(embed_dims, 2 * self.num_groups) if enabled else None
        # Official point3: per-head scale(s); absent for the fixed-scale variant.
        self.scale_fc: Optional[nn.Module] = None
        if self.num_scales > 0 and enabled:
            self.scale_fc = Linear(embed_dims, self.num_scales * self.num_groups)

    def init_weights(self) -> None:
        """Start the scale branch at ``s = 1`` for every query (weight 0, bias 1).

        With ``s = 1`` the learnable prior starts as the fixed-scale Gaussian, which the paper
        found to be a good prior; the offsets keep the default Linear init (the detector's
        xavier pass re-initialises them, as the official ``_reset_parameters`` does).
        """
        if self.scale_fc is not None:
            nn.init.zeros_(self.scale_fc.weight)
            nn.init.ones_(self.scale_fc.bias)

    def forward(self, query_feat: Tensor, centres: Tensor,
                spatial_shape: Sequence[int]) -> Tensor:
        """Compute the log-prior for every (query, key cell) pair.

        Args:
            query_feat: Normalised query features the modulation is predicted from,
                (bs, num_queries, embed_dims).
            centres: Shared Gaussian centres in feature-cell units, ``(x, y)``,
                (bs, num_queries, 2).
            spatial_shape: ``(H, W)`` of the padded feature map the keys come from; keys are
                flattened row-major (``y * W + x``).

        Returns:
            Tensor: log G of shape (bs, num_heads, num_queries, H * W); add it to the
            attention logits of the matching head.
        """
        bs, num_queries, _ = query_feat.shape
        if not self.enabled:
            return query_feat.new_zeros(bs, self.num_heads, num_queries,
                                        int(spatial_shape[0]) * int(spatial_shape[1]))
        g = self.num_groups
        # (bs, Q, g, 2): every head moves the shared centre by its own offset.
        centre = centres.unsqueeze(2) + self.offset_fc(query_feat).view(bs, num_queries, g, 2)
        xs, ys = cell_grid(spatial_shape, query_feat.device, query_feat.dtype)
        # The grid is separable, so squared distances per axis are computed on (W,) and (H,)
        # and broadcast to (H, W) only when combined: same values, far less memory.
        dx2 = (centre[..., 0:1] - xs).pow(2)[..., None, :]  # (bs, Q, g, 1, W)
        dy2 = (centre[..., 1:2] - ys).pow(2)[..., :, None]  # (bs, Q, g, H, 1)
        if self.scale_type == 'fixed':
            dist = dx2 + dy2
        else:
            scale = self.scale_fc(query_feat)
            # Squared so that a negative prediction can never turn the Gaussian upside down.
            scale = (scale * scale).view(bs, num_queries, g, self.num_scales, 1, 1)
            if self.scale_type == 'head':
                dist = (dx2 + dy2) * scale[:, :, :, 0]
            elif self.scale_type == 'head_xy':
                dist = dx2 * scale[:, :, :, 0] + dy2 * scale[:, :, :, 1]
            else:  # 'head_xy_cross'
                dist = (dx2 * scale[:, :, :, 0] + dy2 * scale[:, :, :, 1]) + \
                    (dx2 * dy2) * scale[:, :, :, 2]
        log_prior = -dist.flatten(-2) / self.bandwidth(spatial_shape)  # (bs, Q, g, H*W)
        log_prior = log_prior.transpose(1, 2)  # (bs, g, Q, H*W)
        if g != self.num_heads:
            log_prior = log_prior.expand(bs, self.num_heads, num_queries, log_prior.size(-1))
        return log_prior

    def bandwidth(self, spatial_shape: Sequence[int]) -> float:
        """The beta used on an (H, W) map: ``smooth``, or its map-relative form."""
        if self.smooth_ref_cells is None:
            return self.smooth
        return self.smooth * (min(spatial_shape[0], spatial_shape[1]) / self.smooth_ref_cells)**2

    def extra_repr(self) -> str:
        return (f'scale_type={self.scale_type}, smooth={self.smooth}, '
                f'smooth_ref_cells={self.smooth_ref_cells}, num_heads={self.num_heads}, '
                f'shared_heads={self.shared_heads}, enabled={self.enabled}')

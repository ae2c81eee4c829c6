"""SMCA transformer layers: Gaussian-modulated decoders (single- and multi-scale) and the
intra/multi-scale encoder of multi-scale SMCA.

Everything reuses mmdet's DETR layers (multi-head attention + ``FFN`` + post-norm), in their
lean form (:mod:`mmdet_ddetr.models.layers.lean_detr_layers`: same parameters and outputs, no
discarded attention weights, cheaper CPU dropout). SMCA only adds an additive log-prior to the
co-attention logits: a float ``attn_mask`` is *added* to ``QK^T / sqrt(d)``, which is exactly
``softmax(QK^T / sqrt(d) + log G)``.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from torch import Tensor

from mmdet.models.layers.transformer import DetrTransformerDecoder, MLP
from mmdet.registry import MODELS
from mmdet.utils import ConfigType, OptConfigType

from ..layers.lean_detr_layers import LeanDetrTransformerDecoderLayer
from ..utils import build_module


def check_heads(attn_cfg: Optional[dict], where: str) -> None:
    """Fail at build time with a readable message when d_model is not divisible by heads."""
    if not attn_cfg:
        return
    dims, heads = attn_cfg.get('embed_dims', 256), attn_cfg.get('num_heads', 8)
    if heads <= 0 or dims % heads != 0:
        raise ValueError(f'{where}: embed_dims ({dims}) must be a positive multiple of '
                         f'num_heads ({heads}).')


def add_padding_mask(log_prior: Tensor, key_padding_mask: Optional[Tensor]) -> Tensor:
    """Put ``-inf`` on padded keys of an additive attention bias.

    Doing it here (instead of passing a bool ``key_padding_mask`` next to a float ``attn_mask``)
    merges the two masks once, in the layout the attention takes.

    Args:
        log_prior: (bs, num_heads, num_queries, num_keys).
        key_padding_mask: (bs, num_keys), True = padding, or None.

    Returns:
        Tensor: (bs * num_heads, num_queries, num_keys), the layout of a 3-d ``attn_mask``
        (index ``b * num_heads + h``).
    """
    if key_padding_mask is not None:
        log_prior = log_prior.masked_fill(key_padding_mask[:, None, None, :], float('-inf'))
    return log_prior.flatten(0, 1)


@MODELS.register_module()
class SMCATransformerDecoderLayer(LeanDetrTransformerDecoderLayer):
    """DETR decoder layer whose co-attention is modulated by SMCA's Gaussian prior.

    Order (post-norm, as the official code): ``prior_norm(query + query_pos)`` feeds the
    prior's offsets/scales (computed from the layer *input*), then self-attention -> ``norms.0``,
    Gaussian-modulated co-attention -> ``norms.1``, FFN -> ``norms.2``.

    Args:
        gaussian_prior_cfg: Config of the prior (:class:`SMCAGaussianPrior` unless ``type`` is
            given); ``embed_dims`` / ``num_heads`` are filled from ``cross_attn_cfg``.
        **kwargs: ``self_attn_cfg``, ``cross_attn_cfg``, ``ffn_cfg``, ``norm_cfg``, ``init_cfg``
            of mmdet's ``DetrTransformerDecoderLayer``.
    """

    def __init__(self,
                 gaussian_prior_cfg: OptConfigType = dict(scale_type='head_xy', smooth=8.0),
                 **kwargs) -> None:
        check_heads(kwargs.get('self_attn_cfg'), 'SMCA decoder self_attn_cfg')
        check_heads(kwargs.get('cross_attn_cfg'), 'SMCA decoder cross_attn_cfg')
        self.gaussian_prior_cfg = dict(gaussian_prior_cfg or {})
        super().__init__(**kwargs)

    def _build_prior(self) -> BaseModule:
        return build_module(self.gaussian_prior_cfg, 'SMCAGaussianPrior',
                            embed_dims=self.embed_dims, num_heads=self.cross_attn.num_heads)

    def _init_layers(self) -> None:
        """Add the prior's input norm (official ``norm4``) and the prior to the DETR layer."""
        super()._init_layers()
        self.prior_norm = build_norm_layer(self.norm_cfg, self.embed_dims)[1]
        self.gaussian_prior = self._build_prior()

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                query_pos: Tensor,
                key_pos: Tensor,
                key_padding_mask: Optional[Tensor],
                centres: Tensor,
                spatial_shape: Sequence[int],
                self_attn_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Forward one decoder layer.

        Args:
            query: (bs, num_queries, dim) decoder content (zeros at layer 0).
            key: (bs, H*W, dim) encoder memory.
            value: (bs, H*W, dim) encoder memory.
            query_pos: (bs, num_queries, dim) object queries (positional part).
            key_pos: (bs, H*W, dim) positional encoding of the memory.
            key_padding_mask: (bs, H*W) True = padding, or None.
            centres: (bs, num_queries, 2) Gaussian centres (x, y) in feature-cell units.
            spatial_shape: (H, W) of the padded feature map.
            self_attn_mask: Optional (num_queries, num_queries) self-attention mask.

        Returns:
            Tensor: (bs, num_queries, dim).
        """
        prior_query = self.prior_norm(query + query_pos)
        log_prior = self.gaussian_prior(prior_query, centres, spatial_shape)
        query = self.self_attn(
            query=query, key=query, value=query, query_pos=query_pos, key_pos=query_pos,
            attn_mask=self_attn_mask)
        query = self.norms[0](query)
        query = self.cross_attn(
            query=query, key=key, value=value, query_pos=query_pos, key_pos=key_pos,
            attn_mask=add_padding_mask(log_prior, key_padding_mask))
        query = self.norms[1](query)
        query = self.ffn(query)
        return self.norms[2](query)


@MODELS.register_module()
class SMCATransformerDecoder(DetrTransformerDecoder):
    """Single-scale SMCA decoder.

    The shared Gaussian centre is predicted once, from layer 0's ``prior_norm(query_pos)``
    (official ``point1`` MLP), as ``sigmoid(logits) * (w, h) / feat_stride`` in feature cells,
    and reused by every layer; the box head adds the same logits to every layer's (cx, cy).

    Args:
        num_layers: Decoder layers.
        layer_cfg: Layer config; ``type`` defaults to ``SMCATransformerDecoderLayer``.
        post_norm_cfg: Norm applied to every returned layer output (official ``decoder.norm``).
        return_intermediate: Return all layer outputs (needed for the auxiliary losses).
        feat_stride: Input pixels per feature cell used to map the centre to the grid; the
            official code hard-codes 32 (C5), independent of the actual padded map.
        init_cfg: Usual mmengine init config.
    """

    default_layer_type = 'SMCATransformerDecoderLayer'

    def __init__(self,
                 num_layers: int,
                 layer_cfg: ConfigType,
                 post_norm_cfg: OptConfigType = dict(type='LN'),
                 return_intermediate: bool = True,
                 feat_stride: float = 32,
                 init_cfg: OptConfigType = None) -> None:
        self.feat_stride = feat_stride
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg,
                         post_norm_cfg=post_norm_cfg,
                         return_intermediate=return_intermediate, init_cfg=init_cfg)

    def _init_layers(self) -> None:
        """Build the layers (registry, so the layer type is swappable) and the centre MLP."""
        if self.num_layers < 1:
            raise ValueError('SMCA needs at least one decoder layer (layer 0 predicts the centre)')
        self.layers = ModuleList([
            build_module(self.layer_cfg, self.default_layer_type) for _ in range(self.num_layers)
        ])
        self.embed_dims = self.layers[0].embed_dims
        # Official point1 = MLP(d, d, 2, 3) on the object query: the shared centre logits.
        self.ref_point_head = MLP(self.embed_dims, self.embed_dims, 2, 3)
        self.post_norm = build_norm_layer(self.post_norm_cfg, self.embed_dims)[1]

    def predict_centre_logits(self, query: Tensor, query_pos: Tensor) -> Tensor:
        """Centre logits (x, y) of every query, (bs, num_queries, 2), before the sigmoid."""
        return self.ref_point_head(self.layers[0].prior_norm(query + query_pos))

    def forward(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                key_pos: Tensor, key_padding_mask: Optional[Tensor], img_wh: Tensor,
                spatial_shape: Sequence[int], **kwargs) -> Tuple[Tensor, Tensor]:
        """Run all decoder layers.

        Args:
            query: (bs, num_queries, dim), zeros.
            key / value: (bs, H*W, dim) encoder memory.
            query_pos: (bs, num_queries, dim) object queries.
            key_pos: (bs, H*W, dim) memory positional encoding.
            key_padding_mask: (bs, H*W) True = padding, or None.
            img_wh: (bs, 2) unpadded input size (w, h) of every image, in pixels.
            spatial_shape: (H, W) of the padded feature map.

        Returns:
            tuple[Tensor, Tensor]: hidden states (num_layers, bs, num_queries, dim) after
            ``post_norm`` (only the last layer when ``return_intermediate`` is False), and the
            centre logits (bs, num_queries, 2).
        """
        centre_logits = self.predict_centre_logits(query, query_pos)
        centres = centre_logits.sigmoid() * img_wh[:, None, :] / self.feat_stride
        states = self._run_layers(query, key=key, value=value, query_pos=query_pos,
                                  key_pos=key_pos, key_padding_mask=key_padding_mask,
                                  centres=centres, spatial_shape=spatial_shape, **kwargs)
        return states, centre_logits

    def _run_layers(self, query: Tensor, **layer_kwargs) -> Tensor:
        """Every layer in turn; (num_layers, bs, num_queries, dim) states after
        ``post_norm`` (only the last layer's when ``return_intermediate`` is False)."""
        intermediate = []
        for layer in self.layers:
            query = layer(query, **layer_kwargs)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate)
        return self.post_norm(query).unsqueeze(0)


# --------------------------------------------------------------------------------------------
# Multi-scale SMCA
# --------------------------------------------------------------------------------------------

ENCODER_LAYER_TYPES = ('intra', 'multi')


@MODELS.register_module()
class SMCAMultiScaleEncoder(BaseModule):
    """Multi-scale SMCA encoder built from intra-scale and multi-scale self-attention layers.

    * ``'intra'``: self-attention *within* each scale; one layer (one set of weights) is applied
      to every scale separately, so tokens only see their own scale (cheap at stride 16).
    * ``'multi'``: self-attention over the tokens of all scales together.

    The paper's best design is ``2Intra-Multi-2Intra`` = ``('intra', 'intra', 'multi', 'intra',
    'intra')``; any sequence can be configured.

    Args:
        layer_types: Sequence of ``'intra'`` / ``'multi'``, one entry per layer.
        layer_cfg: Config of every layer; ``type`` defaults to
            :class:`LeanDetrTransformerEncoderLayer`.
        init_cfg: Usual mmengine init config.
    """

    def __init__(self,
                 layer_types: Sequence[str] = ('intra', 'intra', 'multi', 'intra', 'intra'),
                 layer_cfg: ConfigType = dict(),
                 init_cfg: OptConfigType = None) -> None:
        super().__init__(init_cfg=init_cfg)
        layer_types = tuple(layer_types)
        bad = [t for t in layer_types if t not in ENCODER_LAYER_TYPES]
        if bad or not layer_types:
            raise ValueError(f'SMCAMultiScaleEncoder layer_types must be a non-empty sequence of '
                             f'{ENCODER_LAYER_TYPES}, got {layer_types}')
        check_heads(layer_cfg.get('self_attn_cfg'), 'SMCA encoder self_attn_cfg')
        self.layer_types = layer_types
        self.num_layers = len(layer_types)
        self.layers = ModuleList([
            build_module(layer_cfg, 'LeanDetrTransformerEncoderLayer') for _ in layer_types
        ])
        self.embed_dims = self.layers[0].embed_dims

    def forward(self, query: Tensor, query_pos: Tensor, key_padding_mask: Optional[Tensor],
                spatial_shapes: Sequence[Sequence[int]], **kwargs) -> Tensor:
        """Encode the concatenated multi-scale tokens.

        Args:
            query: (bs, sum_l H_l*W_l, dim) flattened tokens, levels concatenated in order.
            query_pos: same shape, positional (+ level) encodings.
            key_padding_mask: (bs, sum_l H_l*W_l) True = padding, or None.
            spatial_shapes: (H_l, W_l) of every level.

        Returns:
            Tensor: (bs, sum_l H_l*W_l, dim).
        """
        sizes = [int(h) * int(w) for h, w in spatial_shapes]
        for layer_type, layer in zip(self.layer_types, self.layers):
            if layer_type == 'multi':
                query = layer(query, query_pos, key_padding_mask, **kwargs)
                continue
            outs = []
            masks = (key_padding_mask.split(sizes, dim=1)
                     if key_padding_mask is not None else [None] * len(sizes))
            for q, pos, mask in zip(query.split(sizes, dim=1), query_pos.split(sizes, dim=1),
                                    masks):
                outs.append(layer(q, pos, mask, **kwargs))
            query = torch.cat(outs, dim=1)
        return query


@MODELS.register_module()
class SMCAMultiScaleDecoderLayer(SMCATransformerDecoderLayer):
    """Decoder layer with multi-scale SMCA co-attention (paper eq. 6-7).

    Every scale has its own Gaussian prior (head-specific offsets and scales) and its own
    softmax; the per-scale outputs are combined with scale-selection weights predicted for
    every query of every image.

    Args:
        num_scales: Number of feature scales.
        scale_selection_cfg: :class:`SMCAScaleSelection` config (``enabled=False`` = ablation
            without scale selection, i.e. equal weights).
        gaussian_prior_cfg: Config of each scale's prior.
        **kwargs: mmdet ``DetrTransformerDecoderLayer`` arguments.
    """

    def __init__(self,
                 num_scales: int = 3,
                 scale_selection_cfg: OptConfigType = dict(),
                 **kwargs) -> None:
        self.num_scales = num_scales
        self.scale_selection_cfg = dict(scale_selection_cfg or {})
        super().__init__(**kwargs)

    def _init_layers(self) -> None:
        LeanDetrTransformerDecoderLayer._init_layers(self)
        self.prior_norm = build_norm_layer(self.norm_cfg, self.embed_dims)[1]
        self.gaussian_priors = ModuleList([self._build_prior() for _ in range(self.num_scales)])
        self.scale_selection = build_module(self.scale_selection_cfg, 'SMCAScaleSelection',
                                            embed_dims=self.embed_dims,
                                            num_scales=self.num_scales)

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                query_pos: Tensor,
                key_pos: Tensor,
                key_padding_mask: Optional[Tensor],
                centres: List[Tensor],
                spatial_shapes: Sequence[Sequence[int]],
                self_attn_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Forward one multi-scale decoder layer.

        Args:
            query / query_pos: (bs, num_queries, dim).
            key / value / key_pos: (bs, sum_l H_l*W_l, dim), levels concatenated.
            key_padding_mask: (bs, sum_l H_l*W_l) True = padding, or None.
            centres: Per level (bs, num_queries, 2) centres in that level's cell units.
            spatial_shapes: (H_l, W_l) of every level.
            self_attn_mask: Optional self-attention mask.

        Returns:
            Tensor: (bs, num_queries, dim).
        """
        if len(spatial_shapes) != self.num_scales:
            raise ValueError(f'expected {self.num_scales} feature scales, '
                             f'got {len(spatial_shapes)}')
        prior_query = self.prior_norm(query + query_pos)
        # (bs, Q, S): one weight per scale for every query of every image (never shared
        # across the batch).
        alpha = self.scale_selection(prior_query)
        query = self.self_attn(
            query=query, key=query, value=query, query_pos=query_pos, key_pos=query_pos,
            attn_mask=self_attn_mask)
        query = self.norms[0](query)

        sizes = [int(h) * int(w) for h, w in spatial_shapes]
        keys, values, key_poss = (t.split(sizes, dim=1) for t in (key, value, key_pos))
        masks = (key_padding_mask.split(sizes, dim=1)
                 if key_padding_mask is not None else [None] * len(sizes))
        zeros = torch.zeros_like(query)
        attn = zeros
        for lvl in range(self.num_scales):
            log_prior = self.gaussian_priors[lvl](prior_query, centres[lvl], spatial_shapes[lvl])
            # identity=zeros: only the attention term is weighted; the residual is added once.
            out = self.cross_attn(
                query=query, key=keys[lvl], value=values[lvl], identity=zeros,
                query_pos=query_pos, key_pos=key_poss[lvl],
                attn_mask=add_padding_mask(log_prior, masks[lvl]))
            attn = attn + alpha[:, :, lvl:lvl + 1] * out
        query = self.norms[1](query + attn)
        query = self.ffn(query)
        return self.norms[2](query)


@MODELS.register_module()
class SMCAMultiScaleDecoder(SMCATransformerDecoder):
    """Multi-scale SMCA decoder: one shared centre, mapped to every scale's cell units.

    Args:
        feat_strides: Input pixels per cell of every scale, e.g. ``(16, 32, 64)``.
        **kwargs: :class:`SMCATransformerDecoder` arguments (``feat_stride`` is ignored).
    """

    default_layer_type = 'SMCAMultiScaleDecoderLayer'

    def __init__(self, feat_strides: Sequence[float] = (16, 32, 64), **kwargs) -> None:
        self.feat_strides = tuple(feat_strides)
        kwargs.setdefault('feat_stride', self.feat_strides[0])
        super().__init__(**kwargs)
        num_scales = getattr(self.layers[0], 'num_scales', len(self.feat_strides))
        if num_scales != len(self.feat_strides):
            raise ValueError(f'feat_strides {self.feat_strides} must list one stride per scale '
                             f'({num_scales} scales in the decoder layers)')

    def forward(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                key_pos: Tensor, key_padding_mask: Optional[Tensor], img_wh: Tensor,
                spatial_shapes: Sequence[Sequence[int]], **kwargs) -> Tuple[Tensor, Tensor]:
        """Run all layers; see :meth:`SMCATransformerDecoder.forward`.

        Args:
            spatial_shapes: (H_l, W_l) of every level (instead of a single shape).

        Returns:
            tuple[Tensor, Tensor]: hidden states (num_layers, bs, num_queries, dim) and centre
            logits (bs, num_queries, 2).
        """
        centre_logits = self.predict_centre_logits(query, query_pos)
        centre_px = centre_logits.sigmoid() * img_wh[:, None, :]
        centres = [centre_px / stride for stride in self.feat_strides]
        states = self._run_layers(query, key=key, value=value, query_pos=query_pos,
                                  key_pos=key_pos, key_padding_mask=key_padding_mask,
                                  centres=centres, spatial_shapes=spatial_shapes, **kwargs)
        return states, centre_logits

"""Multi-scale SMCA-DETR as described in the paper (section 3.3): an intra/multi-scale
self-attention encoder over several feature maps, and a decoder with one Gaussian prior and
one softmax per scale whose outputs are mixed by per-query scale-selection weights."""
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType, OptConfigType

from ..common import build_module
from ..common.levels import flatten_levels, image_padding_mask, level_masks
from .base import (SMCADecoderBase, SMCADecoderLayerBase, SMCADETRBase, add_padding_mask,
                   check_heads, check_stride_setting, image_wh, padded_input_hw,
                   resolve_stride)

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
            :class:`~mmdet_ddetr.models.common.PostNormEncoderLayer` (mmcv's attention).
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
            build_module(layer_cfg, 'PostNormEncoderLayer') for _ in layer_types
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
class SMCAMultiScaleDecoderLayer(SMCADecoderLayerBase):
    """Decoder layer with multi-scale SMCA co-attention (paper eq. 6-7).

    Every scale has its own Gaussian prior (``gaussian_priors``: head-specific offsets and
    scales) and its own softmax; the per-scale outputs are combined with scale-selection
    weights predicted for every query of every image.

    Args:
        num_scales: Number of feature scales.
        scale_selection_cfg: Scale selection config; ``type`` defaults to
            ``SMCAScaleSelection`` (``enabled=False`` = ablation without scale selection, i.e.
            equal weights).
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

    def _init_priors(self) -> None:
        self.gaussian_priors = ModuleList([self._build_prior() for _ in range(self.num_scales)])
        self.scale_selection = build_module(self.scale_selection_cfg, 'SMCAScaleSelection',
                                            embed_dims=self.embed_dims,
                                            num_scales=self.num_scales)

    def priors(self) -> List[BaseModule]:
        return list(self.gaussian_priors)

    def co_attention(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                     key_pos: Tensor, key_padding_mask: Optional[Tensor], prior_query: Tensor,
                     centres: List[Tensor], spatial_shapes: Sequence[Sequence[int]]) -> Tensor:
        """Per-scale modulated co-attention, mixed by the scale-selection weights.

        Args:
            query / query_pos: (bs, num_queries, dim).
            key / value / key_pos: (bs, sum_l H_l*W_l, dim), levels concatenated.
            key_padding_mask: (bs, sum_l H_l*W_l) True = padding, or None.
            prior_query: (bs, num_queries, dim) ``prior_norm(query + query_pos)`` of the
                layer input.
            centres: Per level (bs, num_queries, 2) centres in that level's cell units.
            spatial_shapes: (H_l, W_l) of every level.

        Returns:
            Tensor: (bs, num_queries, dim), residual included.
        """
        if len(spatial_shapes) != self.num_scales:
            raise ValueError(f'expected {self.num_scales} feature scales, '
                             f'got {len(spatial_shapes)}')
        # (bs, Q, S): one weight per scale for every query of every image (never shared
        # across the batch).
        alpha = self.scale_selection(prior_query)
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
        return query + attn


@MODELS.register_module()
class SMCAMultiScaleDecoder(SMCADecoderBase):
    """Multi-scale SMCA decoder: one shared centre, mapped to every scale's cell units.

    Args:
        num_layers: Decoder layers.
        layer_cfg: Layer config; ``type`` defaults to ``SMCAMultiScaleDecoderLayer``.
        feat_strides: Input pixels per cell of every scale: ``'auto'`` (default) derives
            them from the padded input and each map; numbers, e.g. ``(16, 32, 64)``, are
            checked against the maps (see :func:`.base.resolve_stride`).
        post_norm_cfg: Norm applied to every returned layer output.
        return_intermediate: Return all layer outputs (needed for the auxiliary losses).
        init_cfg: Usual mmengine init config.
    """

    default_layer_type = 'SMCAMultiScaleDecoderLayer'

    def __init__(self,
                 num_layers: int,
                 layer_cfg: ConfigType,
                 feat_strides: Union[str, Sequence[float]] = 'auto',
                 post_norm_cfg: OptConfigType = dict(type='LN'),
                 return_intermediate: bool = True,
                 init_cfg: OptConfigType = None) -> None:
        if isinstance(feat_strides, str):
            if feat_strides != 'auto':
                raise ValueError(f"decoder.feat_strides={feat_strides!r}: expected 'auto' or one "
                                 'number per scale')
        else:
            feat_strides = tuple(
                check_stride_setting(s, f'decoder.feat_strides[{i}]')
                for i, s in enumerate(feat_strides))
        self.feat_strides = feat_strides
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg,
                         post_norm_cfg=post_norm_cfg,
                         return_intermediate=return_intermediate, init_cfg=init_cfg)
        # The layers own the number of scales; a layer type without it takes the strides' count.
        self.num_scales = getattr(self.layers[0], 'num_scales', None)
        if self.num_scales is None:
            if feat_strides == 'auto':
                raise ValueError("feat_strides='auto' needs decoder layers with num_scales")
            self.num_scales = len(feat_strides)
        if feat_strides != 'auto' and self.num_scales != len(self.feat_strides):
            raise ValueError(f'feat_strides {self.feat_strides} must list one stride per scale '
                             f'({self.num_scales} scales in the decoder layers)')

    def stride_settings(self) -> List[Union[str, float]]:
        """The stride setting of every scale (``'auto'`` or a number)."""
        if self.feat_strides == 'auto':
            return ['auto'] * self.num_scales
        return list(self.feat_strides)

    def centres_in_cells(self, centre_px: Tensor, input_hw: Tuple[int, int],
                         spatial_shapes: Sequence[Tuple[int, int]], **_) -> List[Tensor]:
        """Per scale, (bs, num_queries, 2) centres in that scale's cells."""
        settings = self.stride_settings()
        return [
            centre_px / resolve_stride(setting, input_hw, shape, centre_px,
                                       f'decoder.feat_strides[{lvl}]')
            for lvl, (setting, shape) in enumerate(zip(settings, spatial_shapes))
        ]


@MODELS.register_module()
class SMCAMultiScaleDETR(SMCADETRBase):
    """Multi-scale SMCA-DETR.

    Features at strides 16/32/64 (C4, C5 and a stride-2 conv on C5, built by the neck), an
    intra/multi-scale self-attention encoder (:class:`SMCAMultiScaleEncoder`), and a decoder
    with per-scale Gaussian priors, per-scale softmax and per-query scale selection
    (:class:`SMCAMultiScaleDecoder`). A learnt level embedding is added to every level's sine
    encoding so the multi-scale layers can tell scales apart.

    Args:
        num_feature_levels: Number of feature scales given by the neck.
        *args, **kwargs: Those of :class:`mmdet.models.DETR`.
    """

    default_encoder_type = 'SMCAMultiScaleEncoder'
    default_decoder_type = 'SMCAMultiScaleDecoder'

    def __init__(self, *args, num_feature_levels: int = 3, **kwargs) -> None:
        self.num_feature_levels = num_feature_levels
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        """SMCA layers plus the level embedding."""
        super()._init_layers()
        if self.decoder.num_scales != self.num_feature_levels:
            raise ValueError(f'the decoder has {self.decoder.num_scales} scales but '
                             f'num_feature_levels={self.num_feature_levels}')
        # Zeros until init_weights draws them (a model never initialised stays finite).
        self.level_embed = nn.Parameter(torch.zeros(self.num_feature_levels, self.embed_dims))

    def init_weights(self) -> None:
        """SMCA init plus a small normal init of the level embedding (breaks the symmetry
        between scales for the multi-scale self-attention)."""
        super().init_weights()
        nn.init.normal_(self.level_embed)

    def pre_transformer(self, mlvl_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Flatten every level, with per-level padding masks and (sine + level) encodings.

        Args:
            mlvl_feats: Neck outputs, (bs, d, H_l, W_l) per level, strides ascending.
            batch_data_samples: Data samples (``batch_input_shape``, ``img_shape``).

        Returns:
            tuple[dict, dict]: encoder inputs (``feat``, ``feat_mask``, ``feat_pos``,
            ``spatial_shapes``) and decoder inputs (``memory_mask``, ``memory_pos``,
            ``img_wh``, ``input_hw``, ``spatial_shapes``).
        """
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f'expected {self.num_feature_levels} feature levels, '
                             f'got {len(mlvl_feats)}')
        input_h, input_w = padded_input_hw(batch_data_samples)
        # Masked even when no image is padded (unlike DDETR): dropping the mask would change
        # which attention kernel runs, and with it the rounding of unpadded predictions.
        masks = level_masks(image_padding_mask(batch_data_samples, mlvl_feats[0].device),
                            mlvl_feats)
        levels = flatten_levels(mlvl_feats, masks, self.positional_encoding, self.level_embed,
                                pos_dtype=mlvl_feats[0].dtype)
        feat, mask, pos = levels.feat, levels.mask, levels.pos
        shapes = [tuple(f.shape[-2:]) for f in mlvl_feats]
        encoder_inputs = dict(feat=feat, feat_mask=mask, feat_pos=pos, spatial_shapes=shapes)
        decoder_inputs = dict(memory_mask=mask, memory_pos=pos, spatial_shapes=shapes,
                              img_wh=image_wh(batch_data_samples, feat),
                              input_hw=(input_h, input_w))
        return encoder_inputs, decoder_inputs

    def forward_encoder(self, feat: Tensor, feat_mask: Tensor, feat_pos: Tensor,
                        spatial_shapes: Sequence[Tuple[int, int]]) -> Dict:
        """Intra/multi-scale encoder; returns ``memory`` (bs, sum H_l*W_l, d)."""
        memory = self.encoder(query=feat, query_pos=feat_pos, key_padding_mask=feat_mask,
                              spatial_shapes=spatial_shapes)
        return dict(memory=memory)


__all__ = ['SMCAMultiScaleEncoder', 'SMCAMultiScaleDecoderLayer', 'SMCAMultiScaleDecoder',
           'SMCAMultiScaleDETR']

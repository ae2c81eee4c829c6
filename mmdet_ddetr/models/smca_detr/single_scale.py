"""Single-scale SMCA-DETR, numerically equal to the official code (commit e4df3ab): one feature
map, one Gaussian prior per decoder layer."""
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.model import BaseModule
from torch import Tensor

from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType, OptConfigType

from .base import (SMCADecoderBase, SMCADecoderLayerBase, SMCADETRBase, StrideSetting,
                   add_padding_mask, check_stride_setting, image_wh, padded_input_hw,
                   resolve_stride)


@MODELS.register_module()
class SMCATransformerDecoderLayer(SMCADecoderLayerBase):
    """DETR decoder layer whose co-attention is modulated by one SMCA Gaussian prior
    (``gaussian_prior``); see :class:`SMCADecoderLayerBase` for the order and arguments."""

    def _init_priors(self) -> None:
        self.gaussian_prior = self._build_prior()

    def priors(self) -> List[BaseModule]:
        return [self.gaussian_prior]

    def co_attention(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                     key_pos: Tensor, key_padding_mask: Optional[Tensor], prior_query: Tensor,
                     centres: Tensor, spatial_shape: Sequence[int]) -> Tensor:
        """Co-attention with ``log G`` added to its logits.

        Args:
            query / query_pos: (bs, num_queries, dim).
            key / value / key_pos: (bs, H*W, dim).
            key_padding_mask: (bs, H*W) True = padding, or None.
            prior_query: (bs, num_queries, dim) ``prior_norm(query + query_pos)`` of the
                layer input.
            centres: (bs, num_queries, 2) Gaussian centres (x, y) in feature-cell units.
            spatial_shape: (H, W) of the padded feature map.

        Returns:
            Tensor: (bs, num_queries, dim), residual included.
        """
        log_prior = self.gaussian_prior(prior_query, centres, spatial_shape)
        return self.cross_attn(
            query=query, key=key, value=value, query_pos=query_pos, key_pos=key_pos,
            attn_mask=add_padding_mask(log_prior, key_padding_mask))


@MODELS.register_module()
class SMCATransformerDecoder(SMCADecoderBase):
    """Single-scale SMCA decoder: the centre ``sigmoid(logits) * (w, h) / stride`` in
    feature cells.

    Args:
        num_layers: Decoder layers.
        layer_cfg: Layer config; ``type`` defaults to ``SMCATransformerDecoderLayer``.
        post_norm_cfg: Norm applied to every returned layer output (official ``decoder.norm``).
        return_intermediate: Return all layer outputs (needed for the auxiliary losses).
        feat_stride: Input pixels per feature cell used to map the centre to the grid:
            ``'auto'`` (default) derives it from the padded input and the feature map; a
            number is checked against the map (an error when they disagree); ``'official'``
            is the official code's fixed 32 (C5), never checked. See :func:`.base.resolve_stride`.
        init_cfg: Usual mmengine init config.
    """

    default_layer_type = 'SMCATransformerDecoderLayer'

    def __init__(self,
                 num_layers: int,
                 layer_cfg: ConfigType,
                 post_norm_cfg: OptConfigType = dict(type='LN'),
                 return_intermediate: bool = True,
                 feat_stride: StrideSetting = 'auto',
                 init_cfg: OptConfigType = None) -> None:
        self.feat_stride = check_stride_setting(feat_stride, 'decoder.feat_stride')
        super().__init__(num_layers=num_layers, layer_cfg=layer_cfg,
                         post_norm_cfg=post_norm_cfg,
                         return_intermediate=return_intermediate, init_cfg=init_cfg)

    def stride_settings(self) -> List[StrideSetting]:
        """The stride setting of the one scale."""
        return [self.feat_stride]

    def centres_in_cells(self, centre_px: Tensor, input_hw: Tuple[int, int],
                         spatial_shape: Sequence[int], **_) -> Tensor:
        """(bs, num_queries, 2) centres in cells of the one (H, W) = ``spatial_shape`` map."""
        return centre_px / resolve_stride(self.feat_stride, input_hw, spatial_shape, centre_px)


@MODELS.register_module()
class SMCADETR(SMCADETRBase):
    """Single-scale SMCA-DETR.

    Reuses mmdet's DETR pipeline (masks, sine positional encoding, DETR encoder, built as
    :class:`~mmdet_ddetr.models.common.PostNormEncoder` so that a config can swap its
    attention); the decoder is
    :class:`SMCATransformerDecoder` and the head :class:`SMCAHead`.

    Official conventions that change numbers (kept so converted official weights match):
    the Gaussian centre is ``sigmoid(logits) * (w, h) / stride`` in cells (the official code
    fixes 32; ``decoder.feat_stride='auto'`` derives the map's stride, which is 32 for C5); grid
    cells are integer indices (no +0.5); the sine encoding has no
    -0.5 offset; ``num_classes + 1`` logits with a never-positive no-object slot.

    Args:
        feat_level: Which neck output feeds the transformer. ``-1`` (default, as DETR) is the
            last one; with an FPN neck, ``0`` selects the finest map (P3 of C3-C5), which keeps
            a fine grid for the Gaussian while carrying the deeper levels' semantics.
        *args, **kwargs: Those of :class:`mmdet.models.DETR`.
    """

    default_encoder_type = 'PostNormEncoder'
    default_decoder_type = 'SMCATransformerDecoder'

    def __init__(self, *args, feat_level: int = -1, **kwargs) -> None:
        self.feat_level = feat_level
        super().__init__(*args, **kwargs)
        num_outs = getattr(self.neck, 'num_outs', None) if self.with_neck else None
        if num_outs is not None and not -num_outs <= feat_level < num_outs:
            raise ValueError(f'feat_level={feat_level} but the neck returns {num_outs} map(s); '
                             'set feat_level within range or change neck.num_outs')

    def pre_transformer(self, img_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """DETR's flattening/masks/positional encoding plus what the Gaussian needs.

        Returns:
            tuple[dict, dict]: encoder inputs (``feat`` (bs, H*W, d), ``feat_mask`` (bs, H*W)
            or None, ``feat_pos``) and decoder inputs (``memory_mask``, ``memory_pos``,
            ``img_wh`` (bs, 2), ``input_hw`` and ``spatial_shape`` (H, W)).
        """
        feat = img_feats[self.feat_level]
        encoder_inputs, decoder_inputs = super().pre_transformer((feat, ), batch_data_samples)
        decoder_inputs.update(
            img_wh=image_wh(batch_data_samples, feat),
            input_hw=padded_input_hw(batch_data_samples),
            spatial_shape=tuple(feat.shape[-2:]))
        return encoder_inputs, decoder_inputs


__all__ = ['SMCATransformerDecoderLayer', 'SMCATransformerDecoder', 'SMCADETR']

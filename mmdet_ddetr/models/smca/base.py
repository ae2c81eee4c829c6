"""SMCA-DETR detectors (arXiv 2101.07448): single-scale (official code) and multi-scale (paper).

Pipeline (mmdet 3.x): ``pre_transformer -> forward_encoder -> pre_decoder -> forward_decoder``,
every step returning dicts; the head receives ``hidden_states`` and the Gaussian-centre logits
(``references``).
"""
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList

from ..utils import build_module
from .gaussian_prior import SMCAGaussianPrior
from .scale_selection import SMCAScaleSelection
from .smca_layers import check_heads


def _img_wh(batch_data_samples: OptSampleList, ref: Tensor) -> Tensor:
    """(bs, 2) unpadded input size (w, h) of every image (official ``h_w`` built from the
    targets' ``size``), in pixels, as float of ``ref``'s dtype."""
    assert batch_data_samples is not None, 'SMCA needs the image sizes (batch_data_samples)'
    return ref.new_tensor([[s.img_shape[1], s.img_shape[0]] for s in batch_data_samples])


@MODELS.register_module()
class SMCADETR(DETR):
    """Single-scale SMCA-DETR, numerically equal to the official code (commit e4df3ab).

    Reuses mmdet's DETR pipeline (masks, sine positional encoding, DETR encoder, built by
    default as :class:`LeanDetrTransformerEncoder`, equal but faster); the decoder is
    :class:`SMCATransformerDecoder` and the head :class:`SMCAHead`.

    Official conventions that change numbers (kept so converted official weights match):
    the Gaussian centre is ``sigmoid(logits) * (w, h) / 32`` in C5 cells (stride fixed by
    ``decoder.feat_stride``); grid cells are integer indices (no +0.5); the sine encoding has no
    -0.5 offset; ``num_classes + 1`` logits with a never-positive no-object slot.

    Args:
        feat_level: Which neck output feeds the transformer. ``-1`` (default, as DETR) is the
            last one; with an FPN neck, ``0`` selects the finest map (P3 of C3-C5), which keeps
            a fine grid for the Gaussian while carrying the deeper levels' semantics.
        *args, **kwargs: Those of :class:`mmdet.models.DETR`.
    """

    def __init__(self, *args, feat_level: int = -1, **kwargs) -> None:
        self.feat_level = feat_level
        super().__init__(*args, **kwargs)
        num_outs = getattr(self.neck, 'num_outs', None) if self.with_neck else None
        if num_outs is not None and not -num_outs <= feat_level < num_outs:
            raise ValueError(f'feat_level={feat_level} but the neck returns {num_outs} map(s); '
                             'set feat_level within range or change neck.num_outs')

    def _init_layers(self) -> None:
        """Build positional encoding, encoder, SMCA decoder and the object queries."""
        check_heads(self.encoder.get('layer_cfg', {}).get('self_attn_cfg'),
                    'SMCA encoder self_attn_cfg')
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = build_module(self.encoder, 'LeanDetrTransformerEncoder')
        self.decoder = build_module(self.decoder, 'SMCATransformerDecoder')
        self.embed_dims = self.decoder.embed_dims
        if self.encoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder embed_dims ({self.encoder.embed_dims}) != decoder '
                             f'embed_dims ({self.embed_dims})')
        # Official query_embed: Q x d positional queries; the content starts at zero.
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        num_feats = self.positional_encoding.num_feats
        if num_feats * 2 != self.embed_dims:
            raise ValueError(f'positional_encoding.num_feats ({num_feats}) must be embed_dims/2 '
                             f'({self.embed_dims}/2)')

    def init_weights(self) -> None:
        """DETR init (xavier on every matrix of the encoder/decoder, as the official
        ``_reset_parameters``), then re-apply the SMCA modules' own inits that xavier would
        otherwise overwrite (scale layers start at s = 1, scale selection at uniform)."""
        super().init_weights()
        for m in self.decoder.modules():
            if isinstance(m, (SMCAGaussianPrior, SMCAScaleSelection)):
                m.init_weights()

    def pre_transformer(self, img_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """DETR's flattening/masks/positional encoding plus what the Gaussian needs.

        Returns:
            tuple[dict, dict]: encoder inputs (``feat`` (bs, H*W, d), ``feat_mask`` (bs, H*W)
            or None, ``feat_pos``) and decoder inputs (``memory_mask``, ``memory_pos``,
            ``img_wh`` (bs, 2), ``spatial_shape`` (H, W)).
        """
        feat = img_feats[self.feat_level]
        encoder_inputs, decoder_inputs = super().pre_transformer((feat, ), batch_data_samples)
        decoder_inputs.update(
            img_wh=_img_wh(batch_data_samples, feat),
            spatial_shape=tuple(feat.shape[-2:]))
        return encoder_inputs, decoder_inputs

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor], memory_pos: Tensor, img_wh: Tensor,
                        spatial_shape: Tuple[int, int]) -> Dict:
        """Run the SMCA decoder.

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, d) and ``references``
            (bs, num_queries, 2), the Gaussian-centre logits the head adds to (cx, cy).
        """
        hidden_states, references = self.decoder(
            query=query, key=memory, value=memory, query_pos=query_pos, key_pos=memory_pos,
            key_padding_mask=memory_mask, img_wh=img_wh, spatial_shape=spatial_shape)
        return dict(hidden_states=hidden_states, references=references)


@MODELS.register_module()
class SMCAMultiScaleDETR(SMCADETR):
    """Multi-scale SMCA-DETR as described in the paper (section 3.3).

    Features at strides 16/32/64 (C4, C5 and a stride-2 conv on C5, built by the neck), an
    intra/multi-scale self-attention encoder (:class:`SMCAMultiScaleEncoder`), and a decoder
    with per-scale Gaussian priors, per-scale softmax and per-query scale selection
    (:class:`SMCAMultiScaleDecoder`). A learnt level embedding is added to every level's sine
    encoding so the multi-scale layers can tell scales apart.

    Args:
        num_feature_levels: Number of feature scales given by the neck.
        **kwargs: :class:`DetectionTransformer` arguments.
    """

    def __init__(self, *args, num_feature_levels: int = 3, **kwargs) -> None:
        self.num_feature_levels = num_feature_levels
        super().__init__(*args, **kwargs)

    def _init_layers(self) -> None:
        """Positional encoding, multi-scale encoder/decoder, level embedding, queries."""
        check_heads(self.encoder.get('layer_cfg', {}).get('self_attn_cfg'),
                    'SMCA encoder self_attn_cfg')
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = build_module(self.encoder, 'SMCAMultiScaleEncoder')
        self.decoder = build_module(self.decoder, 'SMCAMultiScaleDecoder')
        self.embed_dims = self.decoder.embed_dims
        if self.encoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder embed_dims ({self.encoder.embed_dims}) != decoder '
                             f'embed_dims ({self.embed_dims})')
        if len(self.decoder.feat_strides) != self.num_feature_levels:
            raise ValueError(f'decoder.feat_strides {self.decoder.feat_strides} must have '
                             f'num_feature_levels={self.num_feature_levels} entries')
        self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims)
        self.level_embed = nn.Parameter(torch.empty(self.num_feature_levels, self.embed_dims))
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError('positional_encoding.num_feats must be embed_dims / 2')

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
            ``img_wh``, ``spatial_shapes``).
        """
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f'expected {self.num_feature_levels} feature levels, '
                             f'got {len(mlvl_feats)}')
        bs = mlvl_feats[0].size(0)
        input_h, input_w = batch_data_samples[0].batch_input_shape
        img_masks = mlvl_feats[0].new_ones((bs, input_h, input_w))
        for i, sample in enumerate(batch_data_samples):
            h, w = sample.img_shape[:2]
            img_masks[i, :h, :w] = 0
        feats, masks, poss, shapes = [], [], [], []
        for lvl, feat in enumerate(mlvl_feats):
            # Nearest down-sampling of the image mask, as DETR/Deformable DETR (True = padding).
            mask = F.interpolate(img_masks[None], size=feat.shape[-2:]).to(torch.bool)[0]
            pos = self.positional_encoding(mask)
            shapes.append(tuple(feat.shape[-2:]))
            feats.append(feat.flatten(2).transpose(1, 2))
            masks.append(mask.flatten(1))
            poss.append(pos.flatten(2).transpose(1, 2).to(feat.dtype) +
                        self.level_embed[lvl].view(1, 1, -1))
        feat, mask, pos = torch.cat(feats, 1), torch.cat(masks, 1), torch.cat(poss, 1)
        encoder_inputs = dict(feat=feat, feat_mask=mask, feat_pos=pos, spatial_shapes=shapes)
        decoder_inputs = dict(memory_mask=mask, memory_pos=pos, spatial_shapes=shapes,
                              img_wh=_img_wh(batch_data_samples, feat))
        return encoder_inputs, decoder_inputs

    def forward_encoder(self, feat: Tensor, feat_mask: Tensor, feat_pos: Tensor,
                        spatial_shapes) -> Dict:
        """Intra/multi-scale encoder; returns ``memory`` (bs, sum H_l*W_l, d)."""
        memory = self.encoder(query=feat, query_pos=feat_pos, key_padding_mask=feat_mask,
                              spatial_shapes=spatial_shapes)
        return dict(memory=memory)

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Tensor, memory_pos: Tensor, img_wh: Tensor,
                        spatial_shapes) -> Dict:
        """Multi-scale SMCA decoder; same outputs as :meth:`SMCADETR.forward_decoder`."""
        hidden_states, references = self.decoder(
            query=query, key=memory, value=memory, query_pos=query_pos, key_pos=memory_pos,
            key_padding_mask=memory_mask, img_wh=img_wh, spatial_shapes=spatial_shapes)
        return dict(hidden_states=hidden_states, references=references)

"""What single- and multi-scale SMCA-DETR share (arXiv 2101.07448).

SMCA reuses mmdet's DETR layers (mmcv's multi-head attention + ``FFN`` + post-norm, built from
config: :mod:`mmdet_ddetr.models.common.post_norm_layers`) and only adds an additive log-prior
to the co-attention logits: a float ``attn_mask`` is *added* to ``QK^T / sqrt(d)`` by
``nn.MultiheadAttention`` (inside mmcv's), which is exactly ``softmax(QK^T / sqrt(d) + log G)``.
The mask is laid out (bs * num_heads, num_queries, num_keys) in the logits' dtype, the layout
and dtype ``nn.MultiheadAttention`` takes (:func:`add_padding_mask`).

The variants (:mod:`.single_scale`, :mod:`.multi_scale`) are siblings over the bases here:

* :class:`SMCADecoderLayerBase`: the DETR decoder layer plus the prior's input norm; each
  variant builds its own priors and co-attention;
* :class:`SMCADecoderBase`: the layers, the shared Gaussian centre (predicted once from
  layer 0) and the post-norm; each variant maps the centre to its feature grid(s);
* :class:`SMCADETRBase`: the DETR detector with SMCA's encoder, decoder and object queries;
  each variant flattens its feature map(s).

The feature stride (:func:`resolve_stride`): the centre is predicted in input pixels and the
prior is evaluated on the cell grid of a feature map, so ``centre_cells = centre_px / stride``.
The official single-scale code divides by a hard-coded 32 (C5); a backbone or neck of another
stride (C4, DC5, C3) would then misplace every centre without any error. Here the stride of each
scale is one of:

* ``'auto'``: derived from the padded input and the feature map (the default);
* a number: the configured stride, checked against the feature map on every eager forward;
* ``'official'``: the official fixed rule (32, never checked), which the parity check uses.

Derivation: a stride-``s`` stage of ResNet-like backbones (``padding = kernel // 2``) maps ``n``
input pixels to ``ceil(n / s)`` cells, so for a power-of-two ``s <= n`` the ratio ``n / cells``
lies in ``(s / 2, s]``: ``s`` is the smallest power of two that is at least that ratio.
"""
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn import build_norm_layer
from mmengine.model import BaseModule, ModuleList
from torch import Tensor, nn

from mmdet.models.detectors import DETR
from mmdet.models.layers import SinePositionalEncoding
from mmdet.models.layers.transformer import MLP, DetrTransformerDecoder
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType, OptConfigType

from ..common import PostNormDecoderLayer, WeightsFitMixin, build_module
from ..common.build_checks import check_head_type
from ..common.config_checks import check_detector_sizes
from .gaussian_prior import SMCAGaussianPrior
from .scale_selection import SMCAScaleSelection
from .head import SMCAHead


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


def padded_input_hw(batch_data_samples: OptSampleList) -> Tuple[int, int]:
    """(H, W) of the padded batch input, in pixels (``batch_input_shape``)."""
    if batch_data_samples is None:
        raise ValueError('SMCA needs the image sizes: pass batch_data_samples')
    h, w = batch_data_samples[0].batch_input_shape[:2]
    return h, w


def image_wh(batch_data_samples: OptSampleList, ref: Tensor) -> Tensor:
    """(bs, 2) unpadded input size (w, h) of every image (official ``h_w`` built from the
    targets' ``size``), in pixels, as float of ``ref``'s dtype."""
    if batch_data_samples is None:
        raise ValueError('SMCA needs the image sizes: pass batch_data_samples')
    return ref.new_tensor([[s.img_shape[1], s.img_shape[0]] for s in batch_data_samples])


#: The stride the official single-scale code hard-codes (C5).
OFFICIAL_STRIDE = 32
#: Accepted ``feat_stride`` settings besides a positive number.
STRIDE_MODES = ('auto', 'official')

StrideSetting = Union[str, float]
# Largest derivable stride (2**12 = 4096 px per cell).
_MAX_LOG2_STRIDE = 12


def check_stride_setting(setting: StrideSetting, where: str) -> StrideSetting:
    """Validate a ``feat_stride`` setting at build time; returns it (numbers as float)."""
    if isinstance(setting, str):
        if setting not in STRIDE_MODES:
            raise ValueError(f'{where}={setting!r}: expected a positive number or one of '
                             f'{STRIDE_MODES}')
        return setting
    if isinstance(setting, bool) or not isinstance(setting, (int, float)) or setting <= 0:
        raise ValueError(f'{where}={setting!r}: expected a positive number (input pixels per '
                         f'feature cell) or one of {STRIDE_MODES}')
    return float(setting)


def _cells(size: int, stride: float) -> int:
    """Cells a stride-``stride`` stage makes of ``size`` input pixels: ``ceil(size / stride)``."""
    return math.ceil(size / stride)


def derive_stride(input_hw: Sequence[int], feat_hw: Sequence[int]) -> int:
    """The power-of-two stride that turns the padded input ``input_hw`` into ``feat_hw``.

    Raises:
        ValueError: when no power-of-two stride explains both axes (e.g. a backbone that crops
            or a feature map that is not from this input).
    """
    # Per axis the smallest power of two >= n / cells; an axis of one cell only gives a lower
    # bound (every stride >= n yields one cell), so the largest per-axis value is the answer.
    stride = max(2**max(0, math.ceil(math.log2(n / c))) for n, c in zip(input_hw, feat_hw))
    if any(_cells(n, stride) != c for n, c in zip(input_hw, feat_hw)):
        raise ValueError(
            f'SMCA cannot derive the feature stride: a {input_hw[0]}x{input_hw[1]} padded input '
            f'gave a {feat_hw[0]}x{feat_hw[1]} feature map, which no power-of-two stride '
            'explains; set decoder.feat_stride to the number of input pixels per cell')
    return stride


def resolve_stride(setting: StrideSetting, input_hw: Sequence[int], feat_hw: Sequence[int],
                   ref: Tensor, where: str = 'decoder.feat_stride') -> Union[float, Tensor]:
    """Input pixels per cell of a ``feat_hw`` map computed from a ``input_hw`` padded input.

    Args:
        setting: ``'auto'``, ``'official'`` or a configured number (see the module docstring).
        input_hw: (H, W) of the padded batch input, in pixels.
        feat_hw: (H, W) of the feature map.
        ref: A tensor of the centres' device and dtype (for the in-graph derivation).
        where: The config key, for error messages.

    Returns:
        float | Tensor: the stride; a 0-d tensor for ``'auto'`` on symbolic shapes
        (torch.compile with dynamic shapes, dynamic export), where Python arithmetic on them
        would specialise the graph to one image size.

    Raises:
        ValueError: when a configured number contradicts the map or no stride explains it
            (checked on concrete sizes; graphs traced with symbolic sizes skip the checks).
    """
    if setting == 'official':
        return float(OFFICIAL_STRIDE)
    if any(isinstance(v, torch.SymInt) for v in (*input_hw, *feat_hw)):  # compile, export
        return _derive_in_graph(input_hw, feat_hw, ref) if setting == 'auto' else setting
    input_hw, feat_hw = tuple(map(int, input_hw)), tuple(map(int, feat_hw))
    if setting == 'auto':
        return float(derive_stride(input_hw, feat_hw))
    if any(_cells(n, setting) != c for n, c in zip(input_hw, feat_hw)):
        raise ValueError(
            f'{where}={setting:g} contradicts the feature map: a {input_hw[0]}x{input_hw[1]} '
            f'padded input gave a {feat_hw[0]}x{feat_hw[1]} map ({_describe(input_hw, feat_hw)}); '
            f"set {where}='auto' (derived from the map) or the backbone/neck's real stride")
    return setting


def _describe(input_hw: Sequence[int], feat_hw: Sequence[int]) -> str:
    try:
        return f'stride {derive_stride(input_hw, feat_hw)}'
    except ValueError:
        return 'no power-of-two stride explains it'


def _derive_in_graph(input_hw: Sequence[int], feat_hw: Sequence[int], ref: Tensor) -> Tensor:
    """:func:`derive_stride` as tensor operations (no consistency check): per axis the
    smallest power of two >= input / cells, then the largest over the axes."""
    ratio = (ref.new_tensor(list(input_hw), dtype=torch.float32) /
             ref.new_tensor(list(feat_hw), dtype=torch.float32))
    powers = 2.0**torch.arange(_MAX_LOG2_STRIDE + 1, device=ref.device, dtype=torch.float32)
    candidates = torch.where(powers[:, None] >= ratio, powers[:, None], powers[-1])
    return candidates.amin(dim=0).amax(dim=0).to(ref.dtype)


class SMCADecoderLayerBase(PostNormDecoderLayer):
    """DETR decoder layer with the input norm of SMCA's prior (official ``norm4``).

    Post-norm, as the official code: ``prior_norm(query + query_pos)`` feeds the priors'
    offsets/scales (computed from the layer *input*), then self-attention -> ``norms.0``,
    Gaussian-modulated co-attention -> ``norms.1``, FFN -> ``norms.2``. Subclasses build their
    priors in :meth:`_init_priors`, list them in :meth:`priors` and implement the
    co-attention (:meth:`co_attention`).

    Args:
        gaussian_prior_cfg: Config of each prior; ``type`` defaults to ``SMCAGaussianPrior``,
            ``embed_dims`` / ``num_heads`` to those of the layer and its co-attention.
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

    def _init_layers(self) -> None:
        """DETR layer (attentions, FFN, norms), the prior's input norm, then the priors."""
        super()._init_layers()
        self.prior_norm = build_norm_layer(self.norm_cfg, self.embed_dims)[1]
        self._init_priors()

    def _init_priors(self) -> None:
        raise NotImplementedError

    def priors(self) -> List[BaseModule]:
        """The Gaussian priors of this layer (one per feature scale)."""
        raise NotImplementedError

    def _build_prior(self) -> BaseModule:
        return build_module(self.gaussian_prior_cfg, 'SMCAGaussianPrior',
                            embed_dims=self.embed_dims, num_heads=self.cross_attn.num_heads)

    def co_attention(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                     key_pos: Tensor, key_padding_mask: Optional[Tensor], prior_query: Tensor,
                     centres, **feature_shapes) -> Tensor:
        """Gaussian-modulated attention of the queries to the memory, residual included
        (before ``norms.1``); (bs, num_queries, dim)."""
        raise NotImplementedError

    def forward(self,
                query: Tensor,
                key: Tensor,
                value: Tensor,
                query_pos: Tensor,
                key_pos: Tensor,
                key_padding_mask: Optional[Tensor],
                centres,
                self_attn_mask: Optional[Tensor] = None,
                **feature_shapes) -> Tensor:
        """Forward one decoder layer.

        Args:
            query: (bs, num_queries, dim) decoder content (zeros at layer 0).
            key / value: (bs, num_tokens, dim) encoder memory.
            query_pos: (bs, num_queries, dim) object queries (positional part).
            key_pos: (bs, num_tokens, dim) positional encoding of the memory.
            key_padding_mask: (bs, num_tokens) True = padding, or None.
            centres: Gaussian centres (x, y) in feature-cell units, (bs, num_queries, 2) (one
                per scale for multi-scale).
            self_attn_mask: Optional (num_queries, num_queries) self-attention mask.
            **feature_shapes: The feature map shape(s) the variant's co-attention needs.

        Returns:
            Tensor: (bs, num_queries, dim).
        """
        prior_query = self.prior_norm(query + query_pos)
        query = self.self_attn(
            query=query, key=query, value=query, query_pos=query_pos, key_pos=query_pos,
            attn_mask=self_attn_mask)
        query = self.norms[0](query)
        query = self.co_attention(query, key, value, query_pos, key_pos, key_padding_mask,
                                  prior_query, centres, **feature_shapes)
        query = self.norms[1](query)
        return self.norms[2](self.ffn(query))


class SMCADecoderBase(DetrTransformerDecoder):
    """SMCA decoder: layers, the shared Gaussian centre and the post-norm.

    The centre is predicted once, from layer 0's ``prior_norm(query_pos)`` (official ``point1``
    MLP), as ``sigmoid(logits) * (w, h)`` in input pixels; :meth:`centres_in_cells` maps it to
    the feature grid(s) and every layer reuses it. The box head adds the same logits to every
    layer's (cx, cy).

    Args:
        num_layers: Decoder layers.
        layer_cfg: Layer config; ``type`` defaults to the class's ``default_layer_type``.
        post_norm_cfg: Norm applied to every returned layer output (official ``decoder.norm``).
        return_intermediate: Return all layer outputs (needed for the auxiliary losses).
        init_cfg: Usual mmengine init config.
    """

    default_layer_type: str

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

    def stride_settings(self) -> list:
        """The stride setting (``'auto'``, ``'official'`` or a number) of every scale."""
        raise NotImplementedError

    def centres_in_cells(self, centre_px: Tensor, input_hw: Tuple[int, int], **feature_shapes):
        """Map (bs, num_queries, 2) centres in input pixels to the layers' feature cells,
        given the padded input size ``input_hw`` (H, W) and the variant's feature shape(s)."""
        raise NotImplementedError

    def forward(self, query: Tensor, key: Tensor, value: Tensor, query_pos: Tensor,
                key_pos: Tensor, key_padding_mask: Optional[Tensor], img_wh: Tensor,
                input_hw: Tuple[int, int], **kwargs):
        """Run all decoder layers.

        Args:
            query: (bs, num_queries, dim), zeros.
            key / value: (bs, num_tokens, dim) encoder memory.
            query_pos: (bs, num_queries, dim) object queries.
            key_pos: (bs, num_tokens, dim) memory positional encoding.
            key_padding_mask: (bs, num_tokens) True = padding, or None.
            img_wh: (bs, 2) unpadded input size (w, h) of every image, in pixels.
            input_hw: (H, W) of the padded batch input, in pixels (the feature stride is
                derived from it and the feature map, see :func:`resolve_stride`).
            **kwargs: Passed to every layer (the feature map shape(s)).

        Returns:
            tuple[Tensor, Tensor]: hidden states (num_layers, bs, num_queries, dim) after
            ``post_norm`` (only the last layer when ``return_intermediate`` is False), and the
            centre logits (bs, num_queries, 2).
        """
        centre_logits = self.predict_centre_logits(query, query_pos)
        centres = self.centres_in_cells(centre_logits.sigmoid() * img_wh[:, None, :], input_hw,
                                        **kwargs)
        intermediate = []
        for layer in self.layers:
            query = layer(query, key=key, value=value, query_pos=query_pos, key_pos=key_pos,
                          key_padding_mask=key_padding_mask, centres=centres, **kwargs)
            if self.return_intermediate:
                intermediate.append(self.post_norm(query))
        if self.return_intermediate:
            return torch.stack(intermediate), centre_logits
        return self.post_norm(query).unsqueeze(0), centre_logits


class SMCADETRBase(WeightsFitMixin, DETR):
    """DETR with SMCA's encoder, decoder and object queries.

    Official query layout: ``num_queries x embed_dims`` positional queries; the content starts
    at zero (mmdet's ``DETR.pre_decoder``). Subclasses set ``default_encoder_type`` /
    ``default_decoder_type`` and provide ``pre_transformer`` for their feature map(s).

    Args:
        *args, **kwargs: Those of :class:`mmdet.models.DETR`.
    """

    default_encoder_type: str
    default_decoder_type: str

    def __init__(self, *args, bbox_head: ConfigType, num_queries: int = 100, **kwargs) -> None:
        check_head_type(type(self).__name__, bbox_head, SMCAHead,
                        "mmdet's DETRHead goes with mmdet's type='DETR'.")
        # Named config errors before mmdet builds anything (num_queries=0, float sizes).
        check_detector_sizes(num_queries, bbox_head=bbox_head, **{key: kwargs.get(key) for key in (
            'encoder', 'decoder', 'positional_encoding')})
        super().__init__(*args, bbox_head=bbox_head, num_queries=num_queries, **kwargs)

    def _init_layers(self) -> None:
        """Positional encoding, encoder, SMCA decoder and the object queries."""
        check_heads(self.encoder.get('layer_cfg', {}).get('self_attn_cfg'),
                    'SMCA encoder self_attn_cfg')
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = build_module(self.encoder, self.default_encoder_type)
        self.decoder = build_module(self.decoder, self.default_decoder_type)
        self.embed_dims = self.decoder.embed_dims
        if self.encoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder embed_dims ({self.encoder.embed_dims}) != decoder '
                             f'embed_dims ({self.embed_dims})')
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

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor], memory_pos: Tensor, img_wh: Tensor,
                        **feature_shapes) -> Dict:
        """Run the SMCA decoder.

        Args:
            feature_shapes: ``input_hw`` and ``spatial_shape`` (single scale) or
                ``spatial_shapes``, from ``pre_transformer``.

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, d) and ``references``
            (bs, num_queries, 2), the Gaussian-centre logits the head adds to (cx, cy).
        """
        hidden_states, references = self.decoder(
            query=query, key=memory, value=memory, query_pos=query_pos, key_pos=memory_pos,
            key_padding_mask=memory_mask, img_wh=img_wh, **feature_shapes)
        return dict(hidden_states=hidden_states, references=references)

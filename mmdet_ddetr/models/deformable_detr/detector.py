"""Deformable DETR (Zhu et al., "Deformable DETR: Deformable Transformers for End-to-End Object
Detection", arXiv 2010.04159): single-scale, multi-scale, iterative box refinement, two-stage."""
import copy
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.model import xavier_init
from torch import Tensor, nn
from torch.nn.init import normal_

from mmdet.models.detectors.base_detr import DetectionTransformer
from mmdet.models.layers import SinePositionalEncoding
from mmdet.registry import MODELS
from mmdet.structures import OptSampleList
from mmdet.utils import ConfigType, OptConfigType
from .deformable_attention import MSDeformAttention
from .head import DDETRHead
from .two_stage import move_proposal_branches
from ..common import WeightsFitMixin, build_module
from ..common.build_checks import check_head_type
from ..common.config_checks import check_detector_sizes
from ..common.levels import (flatten_levels, image_padding_mask, is_padded, level_masks,
                             valid_ratio)


@MODELS.register_module()
class DDETR(WeightsFitMixin, DetectionTransformer):
    """Deformable DETR detector.

    Pipeline (each stage returns a dict, as in mmdet 3.x):
    ``pre_transformer`` (flatten levels, masks, positions, valid ratios) ->
    ``forward_encoder`` (deformable encoder) -> ``pre_decoder`` (learned queries and reference
    points, or two-stage encoder proposals) -> ``forward_decoder`` (deformable decoder, optional
    box refinement) -> ``bbox_head``.

    Args:
        backbone, neck, bbox_head, train_cfg, test_cfg, data_preprocessor, init_cfg: As for
            :class:`mmdet.models.detectors.DetectionTransformer`.
        encoder (dict): Encoder config; ``type`` defaults to ``DDETREncoder``.
        decoder (dict): Decoder config; ``type`` defaults to ``DDETRDecoder``.
        positional_encoding (dict): ``SinePositionalEncoding`` config (Deformable DETR uses
            ``offset=-0.5``).
        num_queries (int): Object queries (paper: 300).
        num_feature_levels (int): Feature levels fed to the transformer: 1 (single-scale) or
            the neck's ``num_outs`` (paper: 4). The attention configs' ``num_levels`` follow it.
        with_box_refine (bool): Iterative bounding box refinement.
        as_two_stage (bool): Two-stage Deformable DETR (encoder proposals).
        proposal_generator (dict, optional): Two-stage proposal config; ``type`` defaults to
            ``DDETRProposalGenerator``.
    """

    def __init__(self,
                 *args,
                 encoder: ConfigType,
                 decoder: ConfigType,
                 bbox_head: ConfigType,
                 neck: OptConfigType = None,
                 num_feature_levels: int = 4,
                 with_box_refine: bool = False,
                 as_two_stage: bool = False,
                 proposal_generator: OptConfigType = None,
                 **kwargs) -> None:
        check_detector_sizes(kwargs.get('num_queries', 100), encoder=encoder, decoder=decoder,
                             bbox_head=bbox_head,
                             positional_encoding=kwargs.get('positional_encoding'))
        self.with_box_refine = with_box_refine
        self.as_two_stage = as_two_stage
        self.num_feature_levels = num_feature_levels
        self._check_and_fill_levels(neck, encoder, decoder, num_feature_levels)
        check_head_type('DDETR', bbox_head, DDETRHead,
                        "mmdet's DeformableDETRHead goes with mmdet's type='DeformableDETR'.")
        bbox_head = dict(bbox_head)
        for key in ('share_pred_layer', 'num_pred_layer', 'as_two_stage', 'enc_cls_channels'):
            if key in bbox_head:
                raise ValueError(f'bbox_head.{key} is derived from the detector '
                                 '(with_box_refine / as_two_stage / proposal_generator.scoring); '
                                 'remove it from the bbox_head config')
        dims = encoder['layer_cfg']['self_attn_cfg'].get('embed_dims', 256)
        if bbox_head.setdefault('embed_dims', dims) != dims:
            raise ValueError(f'bbox_head.embed_dims={bbox_head["embed_dims"]} but the '
                             f'transformer is {dims} wide; drop embed_dims from bbox_head '
                             '(it follows the encoder)')
        # Refinement needs one box branch per layer; without it all layers share one branch
        # (official). The encoder-proposal branches belong to the proposal generator.
        bbox_head['share_pred_layer'] = not with_box_refine
        bbox_head['num_pred_layer'] = decoder['num_layers']
        # The head's init then starts every decoder box branch at the reference box itself.
        bbox_head['as_two_stage'] = as_two_stage
        self.proposal_generator_cfg = dict(proposal_generator or {})
        super().__init__(*args, neck=neck, encoder=encoder, decoder=decoder,
                         bbox_head=bbox_head, **kwargs)

    @staticmethod
    def _check_and_fill_levels(neck: OptConfigType, encoder: ConfigType, decoder: ConfigType,
                               num_levels: int) -> None:
        """Fail at build time, with the fix, when the level counts disagree; fill the
        attention ``num_levels`` from ``num_feature_levels`` when a config leaves it out."""
        if num_levels < 1:
            raise ValueError(f'num_feature_levels must be >= 1, got {num_levels}')
        if neck is not None and 'num_outs' in neck and neck['num_outs'] != num_levels:
            raise ValueError(
                f'num_feature_levels={num_levels} but the neck gives {neck["num_outs"]} feature '
                f'maps (neck.num_outs); set both to the same value')
        for name, coder, attn_key in (('encoder', encoder, 'self_attn_cfg'),
                                      ('decoder', decoder, 'cross_attn_cfg')):
            attn = coder.setdefault('layer_cfg', {}).setdefault(attn_key, {})
            attn_levels = attn.setdefault('num_levels', num_levels)
            if attn_levels != num_levels:
                raise ValueError(
                    f'{name}.layer_cfg.{attn_key}.num_levels={attn_levels} but '
                    f'num_feature_levels={num_levels}; make them equal (or drop num_levels '
                    'from the attention config, it follows num_feature_levels)')

    def _init_layers(self) -> None:
        # Made first, right after the head's branches (the order, hence the random initial
        # weights, of the layout where they were the head's last branches).
        proposal_branches = self._proposal_branches() if self.as_two_stage else {}
        self.positional_encoding = SinePositionalEncoding(**self.positional_encoding)
        self.encoder = build_module(self.encoder, 'DDETREncoder')
        self.decoder = build_module(self.decoder, 'DDETRDecoder')
        self.embed_dims = self.encoder.embed_dims
        if self.positional_encoding.num_feats * 2 != self.embed_dims:
            raise ValueError(
                f'positional_encoding.num_feats={self.positional_encoding.num_feats} must be '
                f'half of embed_dims={self.embed_dims}')
        if self.decoder.embed_dims != self.embed_dims:
            raise ValueError(f'encoder ({self.embed_dims}) and decoder '
                             f'({self.decoder.embed_dims}) embed_dims differ')
        # Zeros until init_weights draws them: a model that is never initialised (mmdet's
        # init_detector) stays finite, and the draw order of the official init is unchanged.
        self.level_embed = nn.Parameter(torch.zeros(self.num_feature_levels, self.embed_dims))
        if self.as_two_stage:
            self.proposal_generator = build_module(
                self.proposal_generator_cfg, 'DDETRProposalGenerator',
                embed_dims=self.embed_dims, num_queries=self.num_queries,
                num_classes=self.bbox_head.num_classes, num_reg_fcs=self.bbox_head.num_reg_fcs,
                **proposal_branches)
        else:
            # Split into (query_pos, query) in pre_decoder, hence 2 * embed_dims.
            self.query_embedding = nn.Embedding(self.num_queries, self.embed_dims * 2)
            self.reference_points_fc = nn.Linear(self.embed_dims, 2)

    def _proposal_branches(self) -> Dict[str, nn.Module]:
        """The encoder-proposal scoring and box branches, initialised as the official code
        does: clones of the head's (initial) decoder branches, shared with them when the
        decoder branches are shared (no box refinement); a new 1-channel ``Linear`` for the
        objectness score."""
        head = self.bbox_head

        def like_decoder(branch: nn.Module) -> nn.Module:
            return branch if head.share_pred_layer else copy.deepcopy(branch)

        scoring = self.proposal_generator_cfg.get('scoring', 'objectness')
        channels = 1 if scoring == 'objectness' else head.num_classes
        if channels == head.cls_out_channels:
            cls_branch = like_decoder(head.cls_branches[0])
        else:
            cls_branch = nn.Linear(head.embed_dims, channels)
        return dict(cls_branch=cls_branch, reg_branch=like_decoder(head.reg_branches[0]))

    def _rename_legacy_keys(self, state_dict: Dict[str, Tensor], prefix: str) -> None:
        """Checkpoints written before the proposal branches moved keep loading: their
        ``bbox_head.{cls,reg}_branches.<num_layers>`` become the proposal generator's."""
        if self.as_two_stage:
            move_proposal_branches(state_dict, self.decoder.num_layers, prefix)

    def init_weights(self) -> None:
        """Official initialisation (Deformable DETR ``_reset_parameters``)."""
        super().init_weights()
        # Xavier for every projection matrix of the transformer keeps activations at unit
        # scale through the stacked post-norm layers.
        for coder in (self.encoder, self.decoder):
            for p in coder.parameters():
                if p.dim() > 1:
                    nn.init.xavier_uniform_(p)
        # ...but the deformable attentions need their own: zero offset weights with a radial
        # bias (points spread around the reference, further for later points) and zero
        # attention logits (uniform weights) at the start of training.
        for m in self.modules():
            if isinstance(m, MSDeformAttention):
                m.init_weights()
        if self.as_two_stage:
            self.proposal_generator.init_weights()
        else:
            # Uniform Xavier with zero bias puts initial reference points around the image
            # centre (sigmoid(0) = 0.5) with a spread set by the query embedding.
            xavier_init(self.reference_points_fc, distribution='uniform', bias=0.)
        # Level embeddings start random so levels are distinguishable from the first step.
        normal_(self.level_embed)

    # ------------------------------------------------------------------ pipeline
    def pre_transformer(self, mlvl_feats: Tuple[Tensor],
                        batch_data_samples: OptSampleList = None) -> Tuple[Dict, Dict]:
        """Flatten the levels into one token sequence with masks, positions and valid ratios.

        Args:
            mlvl_feats (tuple[Tensor]): Neck outputs, each (bs, dim, H_l, W_l).
            batch_data_samples (list[DetDataSample]): Provide ``img_shape`` and
                ``batch_input_shape`` (padding is bottom/right).

        Returns:
            tuple[dict, dict]: encoder inputs (``feat``, ``feat_mask``, ``feat_pos``,
            ``spatial_shapes``, ``level_start_index``, ``valid_ratios``,
            ``spatial_shape_list``) and decoder inputs (``memory_mask``, shapes, ratios).
        """
        if len(mlvl_feats) != self.num_feature_levels:
            raise ValueError(f'the neck gave {len(mlvl_feats)} feature maps but '
                             f'num_feature_levels={self.num_feature_levels}')
        bs = mlvl_feats[0].size(0)
        # Plain ints in eager mode, symbolic under torch.compile(dynamic=True) and torch.export:
        # int() would specialise the graph to one image size.
        spatial_shape_list = [(f.shape[-2], f.shape[-1]) for f in mlvl_feats]
        # No mask at all when no image is padded: every level is then fully valid, and the
        # attention skips the masking.
        masks = None
        if batch_data_samples is not None and is_padded(batch_data_samples):
            image_mask = image_padding_mask(batch_data_samples, mlvl_feats[0].device)
            masks = level_masks(image_mask, mlvl_feats)
        levels = flatten_levels(mlvl_feats, masks, self.positional_encoding, self.level_embed)

        spatial_shapes = shapes_tensor(spatial_shape_list, mlvl_feats[0].device)
        level_start_index = torch.cat((spatial_shapes.new_zeros((1, )),
                                       spatial_shapes.prod(1).cumsum(0)[:-1]))
        if masks is None:
            valid_ratios = mlvl_feats[0].new_ones(bs, len(mlvl_feats), 2)
        else:
            valid_ratios = torch.stack([valid_ratio(m) for m in masks], 1)
        shared = dict(spatial_shapes=spatial_shapes, level_start_index=level_start_index,
                      valid_ratios=valid_ratios, spatial_shape_list=spatial_shape_list)
        encoder_inputs_dict = dict(feat=levels.feat, feat_mask=levels.mask, feat_pos=levels.pos,
                                   **shared)
        decoder_inputs_dict = dict(memory_mask=levels.mask, **shared)
        return encoder_inputs_dict, decoder_inputs_dict

    def forward_encoder(self, feat: Tensor, feat_mask: Optional[Tensor], feat_pos: Tensor,
                        spatial_shapes: Tensor, level_start_index: Tensor,
                        valid_ratios: Tensor, spatial_shape_list: List[Tuple[int, int]]) -> Dict:
        """Run the deformable encoder.

        Returns:
            dict: ``memory`` (bs, num_tokens, dim), ``memory_mask`` and
            ``spatial_shape_list`` for the two-stage proposals.
        """
        memory = self.encoder(query=feat, query_pos=feat_pos, key_padding_mask=feat_mask,
                              spatial_shapes=spatial_shapes,
                              level_start_index=level_start_index, valid_ratios=valid_ratios,
                              spatial_shape_list=spatial_shape_list)
        return dict(memory=memory, memory_mask=feat_mask, spatial_shape_list=spatial_shape_list)

    def pre_decoder(self, memory: Tensor, memory_mask: Optional[Tensor],
                    spatial_shape_list: List[Tuple[int, int]]) -> Tuple[Dict, Dict]:
        """Decoder queries and initial references.

        One-stage: learned ``query_embedding`` split into (query_pos, query); reference
        points ``sigmoid(Linear(query_pos))``. Two-stage: top-k encoder proposals give the
        reference boxes, and their sine embedding the queries.

        Returns:
            tuple[dict, dict]: decoder inputs (``query``, ``query_pos``, ``memory``,
            ``reference_points``) and head inputs: in training, the encoder proposal outputs
            for the two-stage loss (``enc_outputs_class`` (bs, num_tokens, C),
            ``enc_outputs_coord`` (bs, num_tokens, 4), both None for one-stage); empty at
            inference, where the head does not use them (as mmdet's ``DeformableDETR``).
        """
        bs = memory.size(0)
        if self.as_two_stage:
            proposals = self.proposal_generator(memory, memory_mask, spatial_shape_list)
            query, query_pos = proposals['query'], proposals['query_pos']
            reference_points = proposals['reference_points']
            enc_outputs_class = proposals['enc_outputs_class']
            enc_outputs_coord = proposals['enc_outputs_coord']
        else:
            enc_outputs_class = enc_outputs_coord = None
            query_pos, query = torch.split(self.query_embedding.weight, self.embed_dims, dim=1)
            query_pos = query_pos.unsqueeze(0).expand(bs, -1, -1)
            query = query.unsqueeze(0).expand(bs, -1, -1)
            reference_points = self.reference_points_fc(query_pos).sigmoid()
        decoder_inputs_dict = dict(query=query, query_pos=query_pos, memory=memory,
                                   reference_points=reference_points)
        head_inputs_dict = dict(enc_outputs_class=enc_outputs_class,
                                enc_outputs_coord=enc_outputs_coord) if self.training else {}
        return decoder_inputs_dict, head_inputs_dict

    def forward_decoder(self, query: Tensor, query_pos: Tensor, memory: Tensor,
                        memory_mask: Optional[Tensor], reference_points: Tensor,
                        spatial_shapes: Tensor, level_start_index: Tensor,
                        valid_ratios: Tensor,
                        spatial_shape_list: Sequence[Tuple[int, int]]) -> Dict:
        """Run the deformable decoder.

        Returns:
            dict: ``hidden_states`` (num_layers, bs, num_queries, dim) and ``references``, a
            list of num_layers + 1 tensors: the initial reference, then each layer's.
        """
        hidden_states, inter_references = self.decoder(
            query=query, query_pos=query_pos, value=memory, key_padding_mask=memory_mask,
            reference_points=reference_points, spatial_shapes=spatial_shapes,
            level_start_index=level_start_index, valid_ratios=valid_ratios,
            spatial_shape_list=spatial_shape_list,
            reg_branches=self.bbox_head.reg_branches if self.with_box_refine else None)
        return dict(hidden_states=hidden_states,
                    references=[reference_points, *inter_references])


def shapes_tensor(shape_list: Sequence[Tuple[int, int]], device: torch.device) -> Tensor:
    """(num_levels, 2) int64 tensor of the level shapes.

    Eager: one ``as_tensor``. Under ``torch.compile`` / ``torch.export`` the shapes are
    symbolic and ``as_tensor`` would bake the traced size into the graph, so the tensor is
    built from ``full`` ops that keep them symbolic.
    """
    if not torch.compiler.is_compiling():
        return torch.as_tensor(shape_list, dtype=torch.long, device=device)
    return torch.stack([torch.stack([torch.full((), n, dtype=torch.long, device=device)
                                     for n in shape]) for shape in shape_list])


__all__ = ['DDETR']

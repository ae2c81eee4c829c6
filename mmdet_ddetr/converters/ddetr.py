"""Weights of the official Deformable DETR and of mmdet's built-in ``DeformableDETR`` in the
layout of :class:`mmdet_ddetr.models.DDETR`.

Key correspondences (official -> ours):

=============================================  ==============================================
``transformer.level_embed``                    ``level_embed``
``transformer.encoder.layers.i.self_attn.*``   ``encoder.layers.i.self_attn.*`` (same names)
encoder ``norm1`` / ``norm2``                  ``norms.0`` / ``norms.1``
decoder ``norm2`` / ``norm1`` / ``norm3``      ``norms.0`` (self) / ``norms.1`` (cross) / ``norms.2``
decoder ``self_attn.{in,out}_proj*``           ``self_attn.attn.{in,out}_proj*``
``linear1`` / ``linear2``                      ``ffn.layers.0.0`` / ``ffn.layers.1``
``transformer.reference_points``               ``reference_points_fc``
``transformer.enc_output(_norm)``              ``proposal_generator.memory_trans_{fc,norm}``
``transformer.pos_trans(_norm)``               ``proposal_generator.pos_trans_{fc,norm}``
``class_embed.i`` / ``bbox_embed.i.layers.j``  ``bbox_head.cls_branches.i`` / ``reg_branches.i.(2j)``
last ``class_embed`` / ``bbox_embed``          ``proposal_generator.cls_branch`` / ``reg_branch``
(two-stage: the encoder's)
``query_embed``                                ``query_embedding``
``input_proj.l.0/1`` (backbone level l)        ``neck.convs.l.conv/gn``
``input_proj.l.0/1`` (extra level e)           ``neck.extra_convs.e.conv/gn``
``backbone.0.body.*``                          ``backbone.*``
=============================================  ==============================================

``transformer.decoder.{bbox,class}_embed.*`` are aliases of the head branches and are dropped.
"""
import re
from typing import Dict, Optional

from torch import Tensor

from ..models.deformable_detr.two_stage import move_proposal_branches
from .checkpoint_io import ConverterError
from .coco_ids import COCO80_IDS
from .rename import FFN_PARTS, Rules, first_match, layer_rules

_RENAMES: Rules = [
    (r'^backbone\.0\.body\.', 'backbone.'),
    (r'^transformer\.level_embed$', 'level_embed'),
    (r'^transformer\.reference_points\.', 'reference_points_fc.'),
    (r'^transformer\.enc_output\.', 'proposal_generator.memory_trans_fc.'),
    (r'^transformer\.enc_output_norm\.', 'proposal_generator.memory_trans_norm.'),
    (r'^transformer\.pos_trans\.', 'proposal_generator.pos_trans_fc.'),
    (r'^transformer\.pos_trans_norm\.', 'proposal_generator.pos_trans_norm.'),
] + layer_rules('encoder', [
    (r'norm1\.', 'norms.0.'),
    (r'norm2\.', 'norms.1.'),
    *FFN_PARTS,
    ('', ''),  # the deformable attention keeps its names
]) + layer_rules('decoder', [
    # Deformable DETR's decoder: norm2 after self-attention, norm1 after cross-attention.
    (r'norm2\.', 'norms.0.'),
    (r'norm1\.', 'norms.1.'),
    (r'norm3\.', 'norms.2.'),
    (r'self_attn\.', 'self_attn.attn.'),
    *FFN_PARTS,
    ('', ''),
]) + [
    (r'^class_embed\.(\d+)\.', r'bbox_head.cls_branches.\1.'),
    (r'^query_embed\.', 'query_embedding.'),
]

_MMDET_RENAMES: Rules = [
    (r'^memory_trans_fc\.', 'proposal_generator.memory_trans_fc.'),
    (r'^memory_trans_norm\.', 'proposal_generator.memory_trans_norm.'),
    (r'^pos_trans_fc\.', 'proposal_generator.pos_trans_fc.'),
    (r'^pos_trans_norm\.', 'proposal_generator.pos_trans_norm.'),
]


# Weights that mmdet's DeformableDETR never has, and the mmdet detectors that have them: those
# also have "level_embed" and "bbox_head.reg_branches.*", and their weights would "convert".
_FOREIGN_PREFIXES = (
    ('dn_query_generator.', 'DINO (denoising queries)'),
    ('decoder.ref_point_head.', 'DINO / DAB-DETR / Conditional DETR (reference point head)'),
    ('decoder.norm.', 'DINO or another DETR with a decoder output norm'),
)


# Weight names that only mmdet_ddetr's DDETR has (mmdet's two-stage keeps them at top level).
OUR_PREFIXES = ('proposal_generator.', )


def foreign_architecture(state_dict: Dict[str, Tensor]) -> Optional[str]:
    """``'<key>' (<architecture>)`` for a weight of another mmdet DETR-family detector, or
    None."""
    for prefix, architecture in _FOREIGN_PREFIXES:
        key = next((k for k in state_dict if k.startswith(prefix)), None)
        if key is not None:
            return f'{key!r} ({architecture})'
    return None


def _refuse_foreign(state_dict: Dict[str, Tensor]) -> None:
    foreign = foreign_architecture(state_dict)
    if foreign is not None:
        raise ConverterError(f'not a Deformable DETR checkpoint: it has the weight {foreign}; '
                             'only official and mmdet Deformable DETR weights convert')


def is_official_ddetr(state_dict: Dict[str, Tensor]) -> bool:
    return 'transformer.level_embed' in state_dict


def is_mmdet_ddetr(state_dict: Dict[str, Tensor]) -> bool:
    return ('level_embed' in state_dict and foreign_architecture(state_dict) is None and any(
        k.startswith('bbox_head.reg_branches.') for k in state_dict))


def official_to_ours(state_dict: Dict[str, Tensor], proposal_scoring: str = 'class0',
                     coco91_to_80: bool = False) -> Dict[str, Tensor]:
    """Convert an official Deformable DETR state_dict (any variant).

    Args:
        state_dict (dict): Official ``model`` weights.
        proposal_scoring (str): Layout of the two-stage encoder class branch in the target
            config: ``'class0'`` keeps all channels; ``'objectness'`` keeps only channel 0,
            the one the official code ranks proposals by (inference is then identical).
        coco91_to_80 (bool): The checkpoint's classifier has the official 91 COCO-id logits;
            keep the 80 real classes in mmdet's order.

    Returns:
        dict: Weights for :class:`DDETR`.
    """
    if not is_official_ddetr(state_dict):
        hint = (' It looks like an mmdet DeformableDETR checkpoint: use --source mmdet.'
                if is_mmdet_ddetr(state_dict) else '')
        raise ConverterError('not an official Deformable DETR checkpoint (no '
                             f'"transformer.level_embed" weight).{hint}')
    num_backbone_levels = sum(
        1 for k, v in state_dict.items()
        if re.fullmatch(r'input_proj\.\d+\.0\.weight', k) and v.shape[-1] == 1)
    out: Dict[str, Tensor] = {}
    for key, value in state_dict.items():
        if re.match(r'^transformer\.decoder\.(bbox|class)_embed\.', key):
            continue  # aliases of the head's branches
        m = re.match(r'^bbox_embed\.(\d+)\.layers\.(\d+)\.(.*)$', key)
        if m:
            out[f'bbox_head.reg_branches.{m[1]}.{2 * int(m[2])}.{m[3]}'] = value
            continue
        m = re.match(r'^input_proj\.(\d+)\.([01])\.(.*)$', key)
        if m:
            lvl, part, rest = int(m[1]), ('conv', 'gn')[int(m[2])], m[3]
            if lvl < num_backbone_levels:
                out[f'neck.convs.{lvl}.{part}.{rest}'] = value
            else:
                out[f'neck.extra_convs.{lvl - num_backbone_levels}.{part}.{rest}'] = value
            continue
        out[first_match(key, _RENAMES) or key] = value
    return _adapt_classifiers(out, proposal_scoring, coco91_to_80)


def mmdet_to_ours(state_dict: Dict[str, Tensor],
                  proposal_scoring: str = 'class0') -> Dict[str, Tensor]:
    """Convert mmdet 3.x built-in ``DeformableDETR`` weights.

    mmdet's stock neck has no conv bias; ours keeps it (official layout), so zero biases are
    added, which is exactly mmdet's function.
    """
    _refuse_foreign(state_dict)
    if not is_mmdet_ddetr(state_dict) or is_official_ddetr(state_dict):
        raise ConverterError('not an mmdet DeformableDETR checkpoint (needs "level_embed" and '
                             '"bbox_head.reg_branches.*" weights)')
    out = {first_match(k, _MMDET_RENAMES) or k: v for k, v in state_dict.items()}
    for key in list(out):
        m = re.match(r'^(neck\.(?:extra_)?convs\.\d+)\.conv\.weight$', key)
        if m and f'{m[1]}.conv.bias' not in out:
            out[f'{m[1]}.conv.bias'] = out[key].new_zeros(out[key].shape[0])
    return _adapt_classifiers(out, proposal_scoring, coco91_to_80=False)


def _num_pred_layers(sd: Dict[str, Tensor]) -> int:
    return 1 + max(int(m[1]) for k in sd
                   for m in [re.match(r'^bbox_head\.cls_branches\.(\d+)\.', k)] if m)


def _adapt_classifiers(sd: Dict[str, Tensor], proposal_scoring: str,
                       coco91_to_80: bool) -> Dict[str, Tensor]:
    if proposal_scoring not in ('class0', 'objectness'):
        raise ConverterError(f'unknown proposal scoring {proposal_scoring!r}; use class0 or '
                             'objectness')
    if any(k.startswith('proposal_generator.') for k in sd):
        # Two-stage: the last class/box branches are the encoder proposals'.
        move_proposal_branches(sd, _num_pred_layers(sd) - 1)
    if coco91_to_80:
        width = sd['bbox_head.cls_branches.0.weight'].shape[0]
        if width != 91:
            raise ConverterError(f'--coco91-to-80 expects 91 class logits, the checkpoint has '
                                 f'{width}')
    for key in list(sd):
        if re.match(r'^proposal_generator\.cls_branch\.(weight|bias)$', key):
            if proposal_scoring == 'objectness' or coco91_to_80:
                # Proposals are ranked by channel 0 only; with the 91-id layout channel 0 is
                # the unused id 0 that the official encoder loss trains as "object".
                sd[key] = sd[key][:1].clone()
        elif coco91_to_80 and re.match(r'^bbox_head\.cls_branches\.\d+\.(weight|bias)$', key):
            sd[key] = sd[key][list(COCO80_IDS)].clone()
    return sd


def detect_source(state_dict: Dict[str, Tensor]) -> str:
    """'official' or 'mmdet', or a ConverterError naming what the checkpoint lacks."""
    if is_official_ddetr(state_dict):
        return 'official'
    if is_mmdet_ddetr(state_dict):
        return 'mmdet'
    _refuse_foreign(state_dict)
    sample = ', '.join(list(state_dict)[:3])
    raise ConverterError('this checkpoint is neither an official nor an mmdet Deformable DETR '
                         f'(first keys: {sample}); check that you passed the right file')


__all__ = ['official_to_ours', 'mmdet_to_ours', 'detect_source', 'foreign_architecture',
           'OUR_PREFIXES']


"""Official SMCA-DETR checkpoint keys -> mmdet_ddetr keys (single-scale model).

Used by ``tools/model_converters/smca_official_to_mmdet_ddetr.py`` (file handling through
:mod:`.checkpoint_io`) and by the parity check (:mod:`mmdet_ddetr.parity.smca`). Pure key
renaming: no value is changed. Every failure is a :class:`ConverterError`.
"""
import re
from collections import OrderedDict
from typing import Dict, Mapping

import torch

from ..models.smca_detr.gaussian_prior import OFFICIAL_SCALE_TYPES
from .checkpoint_io import ConverterError, state_dict_of
from .coco_ids import COCO80_IDS
from .rename import FFN_PARTS, Rules, first_match, layer_rules

# (official regex, our replacement); the first matching rule wins, a key without one is an error.
RULES: Rules = [
    (r'^backbone\.0\.body\.', 'backbone.'),
    (r'^transformer\.decoder\.layers\.0\.point1\.layers\.(\d+)\.(weight|bias)$',
     r'decoder.ref_point_head.layers.\1.\2'),
] + layer_rules('encoder', [
    (r'self_attn\.', 'self_attn.attn.'),
    (r'norm1\.', 'norms.0.'),
    (r'norm2\.', 'norms.1.'),
    *FFN_PARTS,
]) + layer_rules('decoder', [
    # DETR order: norm1 after self-attn, norm2 after co-attn, norm3 after FFN; norm4 and
    # point2/point3 are SMCA's prior.
    (r'self_attn\.', 'self_attn.attn.'),
    (r'multihead_attn\.', 'cross_attn.attn.'),
    (r'norm1\.', 'norms.0.'),
    (r'norm2\.', 'norms.1.'),
    (r'norm3\.', 'norms.2.'),
    (r'norm4\.', 'prior_norm.'),
    (r'point2\.', 'gaussian_prior.offset_fc.'),
    (r'point3\.', 'gaussian_prior.scale_fc.'),
    *FFN_PARTS,
]) + [
    (r'^transformer\.decoder\.norm\.', 'decoder.post_norm.'),
    (r'^class_embed\.', 'bbox_head.fc_cls.'),
    (r'^bbox_embed\.layers\.0\.', 'bbox_head.reg_ffn.layers.0.0.'),
    (r'^bbox_embed\.layers\.1\.', 'bbox_head.reg_ffn.layers.1.'),
    (r'^bbox_embed\.layers\.2\.', 'bbox_head.fc_reg.'),
    (r'^query_embed\.weight$', 'query_embedding.weight'),
    (r'^input_proj\.', 'neck.convs.0.conv.'),
]
# Weight names of our layout (official ones start with transformer., class_embed, bbox_embed ...).
OUR_PREFIXES = ('bbox_head.', 'encoder.', 'decoder.', 'query_embedding.')
# Keys every official single-scale SMCA checkpoint has; used to recognise one.
REQUIRED_KEYS = ('transformer.decoder.layers.0.point1.layers.0.weight',
                 'transformer.decoder.layers.0.point2.weight', 'class_embed.weight',
                 'bbox_embed.layers.2.weight', 'query_embed.weight', 'input_proj.weight')


def convert_smca_official_state_dict(
        state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Rename official SMCA keys to ours.

    Official ResNet keys ``backbone.0.body.*`` become ``backbone.*``; FrozenBatchNorm has no
    ``num_batches_tracked`` buffer, so a zero one is added for every BN (mmdet's BN has it, and
    it is unused with frozen statistics).

    Args:
        state_dict: Official state dict, or the whole checkpoint (weights under ``model``).

    Returns:
        OrderedDict: our keys -> the same tensors.

    Raises:
        ConverterError: a required SMCA key is missing, a key has no rule (unrelated or
            unsupported, e.g. pre-norm ``transformer.encoder.norm`` or segmentation heads),
            or a value is not a tensor.
    """
    state_dict = state_dict_of(state_dict)
    missing = [k for k in REQUIRED_KEYS if k not in state_dict]
    if missing:
        raise ConverterError(
            f'not an official single-scale SMCA-DETR checkpoint: missing {missing[:4]}'
            f'{" ..." if len(missing) > 4 else ""}')
    out: 'OrderedDict[str, torch.Tensor]' = OrderedDict()
    unknown = []
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise ConverterError(f'value of {key!r} is a {type(value).__name__}, '
                                      'not a tensor')
        new_key = first_match(key, RULES)
        if new_key is None:
            unknown.append(key)
            continue
        out[new_key] = value
        if new_key.startswith('backbone.') and new_key.endswith('.running_mean'):
            out[new_key[:-len('running_mean')] + 'num_batches_tracked'] = torch.tensor(0)
    if unknown:
        raise ConverterError(
            f'{len(unknown)} key(s) have no mapping (unrelated or unsupported checkpoint, '
            f'e.g. pre-norm or segmentation): {unknown[:6]}')
    return out


def infer_smca_hparams(state_dict: Mapping[str, torch.Tensor]) -> Dict[str, object]:
    """Read the architecture hyper-parameters that the official keys determine.

    ``num_heads`` cannot be read from the attention weights; it is taken from ``point2``
    (2 offsets per head). The scale type follows from ``point3`` (absent = type1).

    Returns:
        dict: ``embed_dims, num_heads, num_encoder_layers, num_decoder_layers,
        feedforward_channels, num_queries, num_classes, scale_type, in_channels``.
    """
    sd = state_dict_of(state_dict)
    d = sd['query_embed.weight'].shape[1]
    num_heads = sd['transformer.decoder.layers.0.point2.weight'].shape[0] // 2
    enc = {int(m.group(1)) for k in sd
           for m in [re.match(r'transformer\.encoder\.layers\.(\d+)\.', k)] if m}
    dec = {int(m.group(1)) for k in sd
           for m in [re.match(r'transformer\.decoder\.layers\.(\d+)\.', k)] if m}
    per_head = (sd['transformer.decoder.layers.0.point3.weight'].shape[0] // num_heads
                if 'transformer.decoder.layers.0.point3.weight' in sd else 0)
    official = {0: 'type1', 1: 'type2', 2: 'type3', 3: 'type4'}[per_head]
    return dict(
        embed_dims=d,
        num_heads=num_heads,
        num_encoder_layers=len(enc),
        num_decoder_layers=len(dec),
        feedforward_channels=sd['transformer.decoder.layers.0.linear1.weight'].shape[0],
        num_queries=sd['query_embed.weight'].shape[0],
        num_classes=sd['class_embed.weight'].shape[0] - 1,
        scale_type=OFFICIAL_SCALE_TYPES[official],
        in_channels=sd['input_proj.weight'].shape[1])


def remap_coco91_to_80(state_dict: Mapping[str, torch.Tensor]) -> 'OrderedDict[str, torch.Tensor]':
    """Select the 80 real COCO classes (+ the no-object slot) from an official COCO head.

    Official COCO checkpoints have ``91 + 1`` class logits indexed by category id; mmdet's
    ``CocoDataset`` uses 80 contiguous labels. Applied to a *converted* state dict.
    """
    out = OrderedDict(state_dict)
    rows = out['bbox_head.fc_cls.weight'].shape[0]
    if rows != 92:
        raise ConverterError(f'expected a 91 (+1 no-object) class COCO head, got {rows} logits')
    index = torch.tensor(list(COCO80_IDS) + [91])
    for key in ('bbox_head.fc_cls.weight', 'bbox_head.fc_cls.bias'):
        out[key] = out[key][index].clone()
    return out


__all__ = ['convert_smca_official_state_dict', 'infer_smca_hparams', 'remap_coco91_to_80']

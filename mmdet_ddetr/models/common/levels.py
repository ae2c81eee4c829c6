"""Feature levels as one token sequence, for both families: the padding mask of the batch, its
per-level copies, the valid size of each level, and the flattening of the levels with their
sine + level encodings.

Padding is bottom/right (mmdet's ``DetDataPreprocessor``), so the valid part of every level is
a top-left rectangle, measured along the first row and column of its mask.
"""
from typing import List, NamedTuple, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmdet.structures import SampleList


def is_padded(batch_data_samples: SampleList) -> bool:
    """Whether any image of the batch is smaller than the padded batch input (host-side
    sizes only: no device synchronisation)."""
    pad_h, pad_w = batch_data_samples[0].batch_input_shape[:2]
    return any(s.img_shape[0] != pad_h or s.img_shape[1] != pad_w for s in batch_data_samples)


def image_padding_mask(batch_data_samples: SampleList, device: torch.device) -> Tensor:
    """(bs, H, W) float32 mask of the padded batch input, 1 at padding.

    Float, because nearest-neighbour ``F.interpolate`` (:func:`level_masks`) takes no bool.

    Args:
        batch_data_samples (list[DetDataSample]): ``batch_input_shape`` (H, W) and each
            image's ``img_shape``.
        device (torch.device): Where the mask is made.
    """
    pad_h, pad_w = batch_data_samples[0].batch_input_shape[:2]
    sizes = torch.tensor([s.img_shape[:2] for s in batch_data_samples], device=device)
    ys = torch.arange(pad_h, device=device)
    xs = torch.arange(pad_w, device=device)
    mask = (ys[None, :, None] >= sizes[:, 0, None, None]) | \
           (xs[None, None, :] >= sizes[:, 1, None, None])
    return mask.float()


def level_masks(image_mask: Tensor, mlvl_feats: Sequence[Tensor]) -> List[Tensor]:
    """The image mask at every level's size, (bs, H_l, W_l) bool, True at padding.

    Nearest-neighbour downsampling, as the official DETR / Deformable DETR backbones.

    Args:
        image_mask (Tensor): (bs, H, W) float mask of :func:`image_padding_mask`.
        mlvl_feats (Sequence[Tensor]): (bs, dim, H_l, W_l) per level.
    """
    return [F.interpolate(image_mask[None], size=feat.shape[-2:]).to(torch.bool)[0]
            for feat in mlvl_feats]


def valid_size(mask: Tensor) -> Tensor:
    """(bs, 2) int64 valid (w, h) of a (bs, H, W) padding mask (True = padding), in cells."""
    valid_h = (~mask[:, :, 0]).sum(1)
    valid_w = (~mask[:, 0, :]).sum(1)
    return torch.stack([valid_w, valid_h], -1)


def valid_ratio(mask: Tensor) -> Tensor:
    """(bs, 2) valid (w, h) fraction of a (bs, H, W) padding mask (True = padding).

    float32 as in the official code whatever the model dtype.
    """
    _, h, w = mask.shape
    valid_w, valid_h = valid_size(mask).unbind(-1)
    return torch.stack([valid_w.float() / w, valid_h.float() / h], -1)


class FlatLevels(NamedTuple):
    """The levels of :func:`flatten_levels`, concatenated in level order.

    Attributes:
        feat (Tensor): (bs, num_tokens, dim) features, num_tokens = sum_l H_l * W_l.
        pos (Tensor): (bs, num_tokens, dim) sine position + level embedding.
        mask (Tensor | None): (bs, num_tokens) True at padding; None without masks.
        masks (list[Tensor] | None): The per-level (bs, H_l, W_l) masks it was made of.
    """
    feat: Tensor
    pos: Tensor
    mask: Optional[Tensor]
    masks: Optional[List[Tensor]]


def flatten_levels(mlvl_feats: Sequence[Tensor], masks: Optional[List[Tensor]],
                   positional_encoding: nn.Module, level_embed: Tensor,
                   pos_dtype: Optional[torch.dtype] = None) -> FlatLevels:
    """Flatten every level into tokens and give each its sine position plus the learnt
    embedding of its level (so that attention over all levels can tell them apart).

    Args:
        mlvl_feats (Sequence[Tensor]): (bs, dim, H_l, W_l) per level.
        masks (list[Tensor] | None): (bs, H_l, W_l) bool per level (:func:`level_masks`), or
            None when no image is padded (the encoding is then that of a full image).
        positional_encoding (nn.Module): mmdet's ``SinePositionalEncoding``; it returns
            float32.
        level_embed (Tensor): (num_levels, dim).
        pos_dtype (torch.dtype, optional): Dtype the sine encoding is cast to before the level
            embedding is added; None keeps float32. SMCA casts to the feature dtype (its
            layers add the positions to features of that dtype), Deformable DETR does not.

    Returns:
        FlatLevels: features, positions and masks of all levels.
    """
    feats, positions = [], []
    for lvl, feat in enumerate(mlvl_feats):
        if masks is None:
            pos = positional_encoding(None, input=feat)
        else:
            pos = positional_encoding(masks[lvl])
        if pos_dtype is not None:
            pos = pos.to(pos_dtype)
        feats.append(feat.flatten(2).transpose(1, 2))
        positions.append(pos.flatten(2).transpose(1, 2) + level_embed[lvl].view(1, 1, -1))
    mask = None if masks is None else torch.cat([m.flatten(1) for m in masks], 1)
    return FlatLevels(torch.cat(feats, 1), torch.cat(positions, 1), mask, masks)


__all__ = ['FlatLevels', 'flatten_levels', 'image_padding_mask', 'is_padded', 'level_masks',
           'valid_ratio', 'valid_size']

"""Padding-mask helpers."""
import torch
from torch import Tensor


def valid_ratio(mask: Tensor) -> Tensor:
    """(bs, 2) valid (w, h) fraction of a (bs, H, W) padding mask (True = padding).

    Counted along the first row/column (padding is bottom/right); float32 as in the official
    code whatever the model dtype.
    """
    _, h, w = mask.shape
    valid_h = (~mask[:, :, 0]).sum(1).float() / h
    valid_w = (~mask[:, 0, :]).sum(1).float() / w
    return torch.stack([valid_w, valid_h], -1)


__all__ = ['valid_ratio']

"""Iterative bounding box refinement (Deformable DETR, Sec. 4.2 and App. A.4).

Each decoder layer predicts a box *relative to* its reference in inverse-sigmoid space; with
refinement the next layer's reference is that prediction, detached, so gradients of one layer's
box loss do not flow back through the references of the layers before it.
"""
import torch
from torch import Tensor

from mmdet.models.layers.transformer import inverse_sigmoid


def apply_box_delta(delta: Tensor, reference: Tensor) -> Tensor:
    """Turn a regression output into a normalised box around ``reference``.

    Args:
        delta (Tensor): (..., 4) raw regression output (cx, cy, w, h) in logit space.
        reference (Tensor): (..., 2) reference point (x, y) or (..., 4) reference box
            (cx, cy, w, h), normalised to [0, 1] of the valid image region.

    Returns:
        Tensor: (..., 4) sigmoid-normalised (cx, cy, w, h). A point reference shifts only the
        centre; a box reference shifts all four coordinates.
    """
    if reference.shape[-1] == 4:
        return (delta + inverse_sigmoid(reference)).sigmoid()
    if reference.shape[-1] != 2:
        raise ValueError('a reference is a point (x, y) or a box (cx, cy, w, h); got last dim '
                         f'{reference.shape[-1]}')
    centre = delta[..., :2] + inverse_sigmoid(reference)
    return torch.cat([centre, delta[..., 2:]], -1).sigmoid()


def refine_reference(delta: Tensor, reference: Tensor) -> Tensor:
    """Next layer's reference: the refined box, detached from the graph."""
    return apply_box_delta(delta, reference).detach()


def scale_to_levels(reference: Tensor, valid_ratios: Tensor) -> Tensor:
    """Express a reference given relative to the valid region on every (padded) level.

    Args:
        reference (Tensor): (bs, num_queries, 2 | 4).
        valid_ratios (Tensor): (bs, num_levels, 2) valid (w, h) fraction of each level.

    Returns:
        Tensor: (bs, num_queries, num_levels, 2 | 4); a box's (w, h) scale like its centre.
    """
    if reference.shape[-1] == 4:
        valid_ratios = valid_ratios.repeat(1, 1, 2)
    return reference[:, :, None] * valid_ratios[:, None]

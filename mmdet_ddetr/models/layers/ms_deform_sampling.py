"""The sampling step of multi-scale deformable attention, in plain PyTorch (CPU path).

Deformable DETR's attention output for query q and head m is
``sum_l sum_k A[q, m, l, k] * bilinear(V_l^m, p[q, m, l, k])`` (paper Eq. 3). mmcv's PyTorch
path samples each level with ``grid_sample``, stacks all levels into one
``(bs*heads, dim, queries, levels*points)`` tensor, multiplies it by the weights and sums. With
encoder queries (one per feature pixel) that stacked tensor is the largest tensor of the layer,
and building it, weighting it and reducing it costs as much as the sampling itself.

Here each level's samples are weighted and reduced over its points right away and accumulated
into the output, so the stacked tensor never exists; the grids and weights are laid out
level-major once so each level reads a contiguous slice. Same maths, summed in a different
order (per level, then over levels): results equal mmcv's to float rounding (about 1e-16 in
float64), and gradients flow through ``grid_sample``'s own backward.
"""
from typing import Sequence, Tuple

import torch.nn.functional as F
from torch import Tensor


def ms_deform_sample(value: Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                     sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Attention-weighted bilinear samples from every level, summed per query and head.

    Args:
        value (Tensor): (bs, num_value, heads, head_dim), the levels' flattened maps
            concatenated in ``spatial_shapes`` order.
        spatial_shapes (Sequence[tuple[int, int]]): (H_l, W_l) of each level, Python ints.
        sampling_locations (Tensor): (bs, num_query, heads, levels, points, 2), normalised
            (x, y) in [0, 1]; locations outside read zeros (``padding_mode='zeros'``).
        attention_weights (Tensor): (bs, num_query, heads, levels, points).

    Returns:
        Tensor: (bs, num_query, heads * head_dim).
    """
    bs, num_value, heads, head_dim = value.shape
    _, num_query, _, num_levels, num_points, _ = sampling_locations.shape
    if sum(h * w for h, w in spatial_shapes) != num_value:
        raise ValueError(f'spatial_shapes {list(spatial_shapes)} cover '
                         f'{sum(h * w for h, w in spatial_shapes)} values, but value has '
                         f'{num_value}')
    # grid_sample wants coordinates in [-1, 1] and one (batch*head) map per call.
    grids = (2 * sampling_locations - 1).permute(3, 0, 2, 1, 4, 5).reshape(
        num_levels, bs * heads, num_query, num_points, 2)
    weights = attention_weights.permute(3, 0, 2, 1, 4).reshape(
        num_levels, bs * heads, 1, num_query, num_points)
    output = None
    start = 0
    for level, (height, width) in enumerate(spatial_shapes):
        value_l = value[:, start:start + height * width].permute(0, 2, 3, 1).reshape(
            bs * heads, head_dim, height, width)
        start += height * width
        samples = F.grid_sample(value_l, grids[level], mode='bilinear',
                                padding_mode='zeros', align_corners=False)
        # (bs*heads, head_dim, num_query, points) -> (bs*heads, head_dim, num_query)
        level_sum = (samples * weights[level]).sum(-1)
        output = level_sum if output is None else output + level_sum
    return output.view(bs, heads * head_dim, num_query).transpose(1, 2).contiguous()


__all__ = ['ms_deform_sample']

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
float64).

:func:`ms_deform_sample_backward` is the matching backward, written out with the ATen kernels
autograd would call on this path (``grid_sampler_2d_backward``, the product's two gradients and
the layout permutations undone), so the operator in :mod:`.ms_deform_attn_op` gives the same
gradients as autograd through :func:`ms_deform_sample`. It recomputes the samples (one
``grid_sample`` per level) instead of keeping them from the forward pass. Measured against
autograd through :func:`ms_deform_sample` (eager forward + backward, R50 shapes, batch 2, 2 CPU
threads) it is 0.94x / 1.09x / 0.76x as fast (426 / 1700 encoder queries, 300 decoder queries;
``tools/analysis_tools/benchmark_msda.py --shapes small enc dec --contests backward``,
docs/benchmarks.md): it does not earn its keep in eager mode, only as the op's opaque backward
under ``torch.compile`` (there inductor's own version is 1.9-2.7x slower).
"""
from typing import Sequence, Tuple

import torch
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
    bs, _, heads, head_dim = value.shape
    num_query = sampling_locations.shape[1]
    grids, weights = _level_major(value, spatial_shapes, sampling_locations, attention_weights)
    output = None
    for level, value_l in enumerate(_level_maps(value, spatial_shapes)):
        samples = F.grid_sample(value_l, grids[level], mode='bilinear',
                                padding_mode='zeros', align_corners=False)
        # (bs*heads, head_dim, num_query, points) -> (bs*heads, head_dim, num_query)
        level_sum = (samples * weights[level]).sum(-1)
        output = level_sum if output is None else output + level_sum
    return output.view(bs, heads * head_dim, num_query).transpose(1, 2).contiguous()


def _level_major(value: Tensor, spatial_shapes: Sequence[Tuple[int, int]],
                 sampling_locations: Tensor, attention_weights: Tensor) -> Tuple[Tensor, Tensor]:
    """Check the shapes; grids (L, bs*heads, nq, points, 2) in [-1, 1] and weights
    (L, bs*heads, 1, nq, points), level-major so each level reads a contiguous slice."""
    bs, num_value, heads, _ = value.shape
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
    return grids, weights


def _level_maps(value: Tensor, spatial_shapes: Sequence[Tuple[int, int]]):
    """Yield each level of ``value`` as a (bs*heads, head_dim, H_l, W_l) map."""
    bs, _, heads, head_dim = value.shape
    start = 0
    for height, width in spatial_shapes:
        yield value[:, start:start + height * width].permute(0, 2, 3, 1).reshape(
            bs * heads, head_dim, height, width)
        start += height * width


def ms_deform_sample_backward(grad_output: Tensor, value: Tensor,
                              spatial_shapes: Sequence[Tuple[int, int]],
                              sampling_locations: Tensor,
                              attention_weights: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`ms_deform_sample` w.r.t. its three tensor inputs.

    Args:
        grad_output (Tensor): (bs, num_query, heads * head_dim).
        Others: as :func:`ms_deform_sample`.

    Returns:
        tuple[Tensor, Tensor, Tensor]: gradients shaped like ``value``,
        ``sampling_locations`` and ``attention_weights``.
    """
    bs, num_value, heads, head_dim = value.shape
    _, num_query, _, num_levels, num_points, _ = sampling_locations.shape
    grids, weights = _level_major(value, spatial_shapes, sampling_locations, attention_weights)
    # Undo the output's (bs, heads*head_dim, nq) -> (bs, nq, heads*head_dim) transpose.
    grad = grad_output.transpose(1, 2).reshape(bs * heads, head_dim, num_query, 1)
    grad_values, grad_grids, grad_weights = [], [], []
    for level, value_l in enumerate(_level_maps(value, spatial_shapes)):
        samples = F.grid_sample(value_l, grids[level], mode='bilinear', padding_mode='zeros',
                                align_corners=False)
        # d(sum_k s*w)/ds = w, d/dw = s summed over head_dim (the broadcast dimension).
        grad_weights.append((grad * samples).sum(1, keepdim=True))
        # interpolation_mode 0 = bilinear, padding_mode 0 = zeros, as in the forward call.
        grad_value_l, grad_grid_l = torch.ops.aten.grid_sampler_2d_backward(
            grad * weights[level], value_l, grids[level], 0, 0, False, [True, True])
        grad_values.append(grad_value_l.reshape(bs, heads, head_dim, -1).permute(0, 3, 1, 2))
        grad_grids.append(grad_grid_l)
    grad_value = torch.cat(grad_values, 1)
    # grids = (2 * loc - 1) permuted (3, 0, 2, 1, 4, 5): chain rule factor 2, inverse permute.
    grad_locations = 2 * torch.stack(grad_grids).view(
        num_levels, bs, heads, num_query, num_points, 2).permute(1, 3, 2, 0, 4, 5)
    grad_attention = torch.stack(grad_weights).view(
        num_levels, bs, heads, num_query, num_points).permute(1, 3, 2, 0, 4)
    return (grad_value.contiguous(), grad_locations.contiguous(), grad_attention.contiguous())


__all__ = ['ms_deform_sample', 'ms_deform_sample_backward']

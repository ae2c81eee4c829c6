"""The sampling step of multi-scale deformable attention as a sum of gathered corners, for
inductor on CPU.

Bilinear sampling at a point is a weighted sum of the four surrounding pixels, so the attention
output of query q and head m (paper Eq. 3),
``sum_l sum_k A[q, m, l, k] * bilinear(V_l^m, p[q, m, l, k])``, is also
``sum over (level, point, corner) of A * w_corner * V[row(corner), m]``: L * P * 4 rows of the
value tensor, each read whole (``head_dim`` contiguous numbers), scaled and added.

Written that way with one term per (level, point, corner) -- static counts, unrolled here --
inductor fuses the corner arithmetic, the gathers, the weighting and the sum into one loop nest
that is vectorised over ``head_dim`` and writes nothing but the output, where ``grid_sample``
per level plus weighting and sum (:func:`.ms_deform_attn_op.ms_deform_sample`) has to write every sample out
(compiled R50 Deformable DETR inference: 1.31x eager with this lowering, 1.00x without;
docs/benchmarks.md, "Compiled and ONNX Runtime against eager"). In eager mode the same expression would materialise each term, so the
eager CPU kernel stays the ``grid_sample`` path; this one is only used as inductor's
decomposition of the operator (:func:`.ms_deform_attn_op.register_inductor_decomposition`).

Against inductor compiling the reference (:func:`.ms_deform_attn_op.ms_deform_sample`, whose
``grid_sample`` inductor turns into gathers and index arithmetic), this lowering runs the
compiled forward 11.5x / 19.2x / 15.6x faster and a compiled forward + backward 2.6x / 2.7x /
1.9x (R50 shapes: 426 / 1700 encoder queries, 300 decoder queries; batch 2, 2 CPU threads;
``tools/analysis_tools/benchmark_msda.py --shapes small enc dec --iters 6 --warmup 1``,
docs/benchmarks.md, "The deformable sampling's special paths against the reference").

Same maths as ``grid_sample(mode='bilinear', padding_mode='zeros', align_corners=False)``:
pixel centres at (i + 0.5) / W, corners outside the map read zero. Results equal the
``grid_sample`` path to float rounding (about 1e-15 in float64).
"""
import torch
from torch import Tensor


def ms_deform_sample_corners(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                             sampling_locations: Tensor, attention_weights: Tensor) -> Tensor:
    """Attention-weighted bilinear samples from every level, summed per query and head.

    Args:
        value (Tensor): (bs, num_value, heads, head_dim), the levels' flattened maps
            concatenated in ``spatial_shapes`` order.
        spatial_shapes (Tensor): (levels, 2) integer (H_l, W_l).
        level_start_index (Tensor): (levels, ) integer start of each level in ``value``.
        sampling_locations (Tensor): (bs, num_query, heads, levels, points, 2), normalised
            (x, y); corners outside the map read zeros.
        attention_weights (Tensor): (bs, num_query, heads, levels, points).

    Returns:
        Tensor: (bs, num_query, heads * head_dim).
    """
    bs, num_value, heads, head_dim = value.shape
    num_levels, num_points = sampling_locations.shape[3:5]
    # (1, 1, 1, levels, 1): broadcast against (bs, num_query, heads, levels, points).
    height = spatial_shapes[:, 0].view(1, 1, 1, num_levels, 1)
    width = spatial_shapes[:, 1].view(1, 1, 1, num_levels, 1)
    start = level_start_index.view(1, 1, 1, num_levels, 1)
    # align_corners=False: pixel i covers [i, i + 1) in units of pixels, centre i + 0.5.
    x = sampling_locations[..., 0] * width.to(value.dtype) - 0.5
    y = sampling_locations[..., 1] * height.to(value.dtype) - 0.5
    x_low, y_low = x.floor(), y.floor()
    frac_x, frac_y = x - x_low, y - y_low
    x_low, y_low = x_low.long(), y_low.long()
    # value seen as a table of (bs * num_value * heads) rows of head_dim numbers.
    table = value.reshape(bs * num_value * heads, head_dim)
    row_base = (torch.arange(bs, device=value.device).view(bs, 1, 1, 1, 1) * num_value * heads
                + torch.arange(heads, device=value.device).view(1, 1, heads, 1, 1))
    output = None
    for dy, weight_y in ((0, 1 - frac_y), (1, frac_y)):
        for dx, weight_x in ((0, 1 - frac_x), (1, frac_x)):
            col, row = x_low + dx, y_low + dy
            inside = (col >= 0) & (col < width) & (row >= 0) & (row < height)
            # Clamped so that outside corners read a valid row, which their zero weight drops.
            pixel = (row.clamp(min=0).minimum(height - 1) * width
                     + col.clamp(min=0).minimum(width - 1))
            rows = row_base + (start + pixel) * heads
            weight = torch.where(inside, attention_weights * weight_x * weight_y, 0)
            for level in range(num_levels):
                for point in range(num_points):
                    term = table[rows[..., level, point]] * weight[..., level, point, None]
                    output = term if output is None else output + term
    return output.flatten(2)


__all__ = ['ms_deform_sample_corners']

"""Multi-scale deformable sampling as a real torch operator: ``mmdet_ddetr::ms_deform_attn``.

Why an operator rather than a Python function or an ``autograd.Function``:

* ``torch.compile`` sees one node whose lowering we choose. Inductor would otherwise decompose
  ``grid_sample`` into gathers and index arithmetic that run several times slower than ATen's
  kernel on CPU, and it cannot trace mmcv's CUDA extension call at all (a graph break per
  layer). On CPU inductor lowers the forward through our own decomposition
  (:mod:`.ms_deform_corners`: one fused loop over the bilinear corners, which writes no
  intermediate samples); on CUDA, and for the backward, the op stays one opaque kernel call.
* The fake (meta) implementations give output shapes from input shapes alone, so dynamo,
  AOTAutograd and ``torch.export`` handle it with dynamic shapes and no host sync.
* ``torch.export`` keeps it as one node that the ONNX export decomposes into standard
  ``GridSample`` nodes (:func:`ms_deform_attn_decomposition`).

Kernels:

* CUDA: mmcv's compiled ``ms_deform_attn_forward`` / ``ms_deform_attn_backward`` (not
  re-implemented here), with an ``im2col_step`` that divides the batch.
* Every other device (CPU): :func:`ms_deform_sample` forward and
  :func:`ms_deform_sample_backward`, which calls the very ATen backward kernels autograd
  would call on the eager path, so gradients
  equal the eager ones to float rounding.

Both ops take the level shapes twice: as the ``(L, 2)`` int64 tensor the CUDA kernel reads, and
as a flat list of ints ``[H_0, W_0, H_1, W_1, ...]`` (symbolic under ``torch.compile``) that the
CPU kernel and the export decomposition read without a device-to-host copy. An empty list means
"read them from the tensor" (one ``tolist()``; fine on CPU).

The sampling equation in plain PyTorch (:func:`ms_deform_sample`, first below; the CPU kernel).
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
the layout permutations undone), so the operator gives the same
gradients as autograd through :func:`ms_deform_sample`. It recomputes the samples (one
``grid_sample`` per level) instead of keeping them from the forward pass. Measured against
autograd through :func:`ms_deform_sample` (eager forward + backward, R50 shapes, batch 2, 2 CPU
threads) it is 0.94x / 1.09x / 0.76x as fast (426 / 1700 encoder queries, 300 decoder queries;
``tools/analysis_tools/benchmark_msda.py --shapes small enc dec --contests backward``,
docs/benchmarks.md): it does not earn its keep in eager mode, so eager CPU models call
:func:`ms_deform_sample` directly and autograd traces it
(:class:`~mmdet_ddetr.models.deformable_detr.deformable_attention.MSDeformAttention`; gradients
equal this backward's to 2e-19 in float64 on the small variants). It stays as the op's opaque
backward under ``torch.compile``, where inductor's own version is 1.9-2.7x slower.
"""
from typing import List, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..analysis.msda_flops import register_flop_handles
from .ms_deform_corners import ms_deform_sample_corners

_OP_NAME = 'mmdet_ddetr::ms_deform_attn'


# ------------------------------------------------------------- the sampling equation (CPU kernel)
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



def safe_im2col_step(batch_size: int, im2col_step: int) -> int:
    """Largest step <= ``im2col_step`` that divides ``batch_size``.

    The CUDA kernel asserts ``batch_size % im2col_step == 0``; mmcv's default of 64 therefore
    breaks any batch above 64 that is not a multiple of 64.
    """
    if batch_size <= im2col_step:
        return max(batch_size, 1)
    return max(d for d in range(1, im2col_step + 1) if batch_size % d == 0)


def level_shapes(spatial_shapes: Tensor, shape_list: Sequence[int]) -> List[Tuple[int, int]]:
    """``[(H_l, W_l), ...]`` from the flat int list, or from the tensor when the list is empty."""
    if len(shape_list) == 0:
        return [(int(h), int(w)) for h, w in spatial_shapes.tolist()]
    if len(shape_list) != 2 * spatial_shapes.shape[0]:
        raise ValueError(f'shape_list has {len(shape_list)} ints but spatial_shapes has '
                         f'{spatial_shapes.shape[0]} levels; pass [H_0, W_0, H_1, W_1, ...]')
    return [(shape_list[2 * i], shape_list[2 * i + 1]) for i in range(len(shape_list) // 2)]


def _mmcv_ext():
    """mmcv's compiled extension, imported on first CUDA call (CPU-only builds never need it)."""
    from mmcv.utils import ext_loader
    return ext_loader.load_ext('_ext', ['ms_deform_attn_forward', 'ms_deform_attn_backward'])


# ---------------------------------------------------------------------------------- forward
@torch.library.custom_op(_OP_NAME, mutates_args=())
def ms_deform_attn(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                   sampling_locations: Tensor, attention_weights: Tensor,
                   shape_list: Sequence[int], im2col_step: int) -> Tensor:
    """Attention-weighted bilinear samples of every level, summed per query and head.

    Args:
        value (Tensor): (bs, num_value, heads, head_dim).
        spatial_shapes (Tensor): (num_levels, 2) int64 (H_l, W_l), on ``value``'s device.
        level_start_index (Tensor): (num_levels, ) int64 start of each level in ``value``.
        sampling_locations (Tensor): (bs, num_query, heads, levels, points, 2), normalised
            (x, y); locations outside [0, 1] read zeros.
        attention_weights (Tensor): (bs, num_query, heads, levels, points).
        shape_list (Sequence[int]): ``spatial_shapes`` flattened as ints, or empty.
        im2col_step (int): CUDA kernel batch chunk; reduced to a divisor of the batch.

    Returns:
        Tensor: (bs, num_query, heads * head_dim), dtype of ``value``.
    """
    return _forward_default(value, spatial_shapes, level_start_index, sampling_locations,
                            attention_weights, shape_list, im2col_step)


def _forward_default(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                     sampling_locations: Tensor, attention_weights: Tensor,
                     shape_list: Sequence[int], im2col_step: int) -> Tensor:
    # Default kernel (CPU and any device without a dedicated one): our PyTorch sampling path.
    return ms_deform_sample(value, level_shapes(spatial_shapes, shape_list), sampling_locations,
                            attention_weights)


def _forward_cuda(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor,
                  shape_list: Sequence[int], im2col_step: int) -> Tensor:
    # mmcv's kernel indexes raw memory: every input must be contiguous. It also reads all three
    # float inputs as value's dtype: under autocast (or a caller mixing precisions) locations and
    # weights may be float32 beside a float16 value, so cast them as mmcv's Function does.
    return _mmcv_ext().ms_deform_attn_forward(
        value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
        sampling_locations.type_as(value).contiguous(),
        attention_weights.type_as(value).contiguous(),
        im2col_step=safe_im2col_step(value.shape[0], im2col_step))


def _forward_fake(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                  sampling_locations: Tensor, attention_weights: Tensor,
                  shape_list: Sequence[int], im2col_step: int) -> Tensor:
    bs, _, heads, head_dim = value.shape
    return value.new_empty((bs, sampling_locations.shape[1], heads * head_dim))


ms_deform_attn.register_kernel('cuda')(_forward_cuda)
ms_deform_attn.register_fake(_forward_fake)

#: The same forward kernels as a second op, with neither autograd nor an inductor lowering:
#: what inductor's decomposition of :func:`ms_deform_attn` emits where it has no fused lowering
#: (CUDA: mmcv's kernel; half precision), since inductor cannot both decompose an op and call it.
ms_deform_attn_forward = torch.library.custom_op(_OP_NAME + '_forward', mutates_args=())(
    _forward_default)
ms_deform_attn_forward.register_kernel('cuda')(_forward_cuda)
ms_deform_attn_forward.register_fake(_forward_fake)


# --------------------------------------------------------------------------------- backward
@torch.library.custom_op(_OP_NAME + '_backward', mutates_args=())
def ms_deform_attn_backward(grad_output: Tensor, value: Tensor, spatial_shapes: Tensor,
                            level_start_index: Tensor, sampling_locations: Tensor,
                            attention_weights: Tensor, shape_list: Sequence[int],
                            im2col_step: int) -> Tuple[Tensor, Tensor, Tensor]:
    """Gradients of :func:`ms_deform_attn` w.r.t. value, sampling locations and weights.

    Args:
        grad_output (Tensor): (bs, num_query, heads * head_dim).
        Others: as :func:`ms_deform_attn`.

    Returns:
        tuple[Tensor, Tensor, Tensor]: shaped like ``value``, ``sampling_locations`` and
        ``attention_weights``.
    """
    return ms_deform_sample_backward(grad_output, value, level_shapes(spatial_shapes, shape_list),
                                     sampling_locations, attention_weights)


@ms_deform_attn_backward.register_kernel('cuda')
def _ms_deform_attn_backward_cuda(grad_output: Tensor, value: Tensor, spatial_shapes: Tensor,
                                  level_start_index: Tensor, sampling_locations: Tensor,
                                  attention_weights: Tensor, shape_list: Sequence[int],
                                  im2col_step: int) -> Tuple[Tensor, Tensor, Tensor]:
    # The kernel reads and writes every float tensor as value's dtype: cast locations and weights
    # to it as the forward does (and as mmcv's Function does), then hand each gradient back in
    # the dtype of its input, so autograd gets matching dtypes.
    sampling_locations_v = sampling_locations.type_as(value).contiguous()
    attention_weights_v = attention_weights.type_as(value).contiguous()
    # mmcv's backward accumulates into zero-initialised outputs (as its autograd.Function does).
    grad_value = torch.zeros_like(value, memory_format=torch.contiguous_format)
    grad_locations = torch.zeros_like(sampling_locations_v, memory_format=torch.contiguous_format)
    grad_weights = torch.zeros_like(attention_weights_v, memory_format=torch.contiguous_format)
    _mmcv_ext().ms_deform_attn_backward(
        value.contiguous(), spatial_shapes.contiguous(), level_start_index.contiguous(),
        sampling_locations_v, attention_weights_v,
        grad_output.contiguous(), grad_value, grad_locations, grad_weights,
        im2col_step=safe_im2col_step(value.shape[0], im2col_step))
    return (grad_value, grad_locations.to(sampling_locations.dtype),
            grad_weights.to(attention_weights.dtype))


@ms_deform_attn_backward.register_fake
def _ms_deform_attn_backward_fake(grad_output: Tensor, value: Tensor, spatial_shapes: Tensor,
                                  level_start_index: Tensor, sampling_locations: Tensor,
                                  attention_weights: Tensor, shape_list: Sequence[int],
                                  im2col_step: int) -> Tuple[Tensor, Tensor, Tensor]:
    return (torch.empty_like(value, memory_format=torch.contiguous_format),
            torch.empty_like(sampling_locations, memory_format=torch.contiguous_format),
            torch.empty_like(attention_weights, memory_format=torch.contiguous_format))


# --------------------------------------------------------------------------------- autograd
def _setup_context(ctx, inputs, output) -> None:
    (value, spatial_shapes, level_start_index, sampling_locations, attention_weights,
     shape_list, im2col_step) = inputs
    ctx.save_for_backward(value, spatial_shapes, level_start_index, sampling_locations,
                          attention_weights)
    ctx.shape_list = list(shape_list)
    ctx.im2col_step = im2col_step


def _backward(ctx, grad_output: Tensor):
    value, spatial_shapes, level_start_index, sampling_locations, attention_weights = \
        ctx.saved_tensors
    grad_value, grad_locations, grad_weights = ms_deform_attn_backward(
        grad_output, value, spatial_shapes, level_start_index, sampling_locations,
        attention_weights, ctx.shape_list, ctx.im2col_step)
    return grad_value, None, None, grad_locations, grad_weights, None, None


ms_deform_attn.register_autograd(_backward, setup_context=_setup_context)


# ---------------------------------------------------------------------------------- inductor
def _inductor_decomposition(value: Tensor, spatial_shapes: Tensor, level_start_index: Tensor,
                            sampling_locations: Tensor, attention_weights: Tensor,
                            shape_list: Sequence[int], im2col_step: int):
    """Inductor's lowering of the forward: the fused corner sum on CPU in float32/float64;
    anything else (CUDA: mmcv's kernel; half precision) calls the same kernel as eager mode,
    through :data:`ms_deform_attn_forward`."""
    if value.device.type == 'cpu' and value.dtype in (torch.float32, torch.float64):
        return ms_deform_sample_corners(value, spatial_shapes, level_start_index,
                                        sampling_locations, attention_weights)
    return ms_deform_attn_forward(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights, shape_list, im2col_step)


def register_inductor_decomposition() -> None:
    """Add the op's CPU lowering to inductor's decomposition table (idempotent).

    Only inductor reads that table: eager mode, ``aot_eager`` and ``torch.export`` keep the op.
    Called by :func:`mmdet_ddetr.engine.compile.compile_detector`; call it before your own
    ``torch.compile`` of a model (not at import: importing inductor costs ~2 s per process).
    Without it inductor still runs the op, as the opaque eager kernel.
    """
    from torch._inductor import decomposition
    op = torch.ops.mmdet_ddetr.ms_deform_attn.default
    if op not in decomposition.decompositions:
        decomposition.register_decomposition(op)(_inductor_decomposition)


# ------------------------------------------------------------------------------------ export
def ms_deform_attn_decomposition(value: Tensor, spatial_shapes: Tensor,
                                 level_start_index: Tensor, sampling_locations: Tensor,
                                 attention_weights: Tensor, shape_list: Sequence[int],
                                 im2col_step: int) -> Tensor:
    """The op in standard ATen ops (``grid_sampler_2d`` per level), for
    ``ExportedProgram.run_decompositions``: what the ONNX export turns into ``GridSample``.

    Needs ``shape_list`` (symbolic ints are fine): the tensor's values are unknown while
    exporting.
    """
    if len(shape_list) == 0:
        raise ValueError('exporting ms_deform_attn needs the level shapes as ints '
                         '(shape_list); pass spatial_shape_list to MSDeformAttention')
    return ms_deform_sample(value, level_shapes(spatial_shapes, shape_list), sampling_locations,
                            attention_weights)


def export_decompositions() -> dict:
    """Decomposition table entry for :meth:`torch.export.ExportedProgram.run_decompositions`."""
    return {torch.ops.mmdet_ddetr.ms_deform_attn.default: ms_deform_attn_decomposition}


# ------------------------------------------------------------------------------ FLOP counting
# Without a handle mmengine's FlopAnalyzer counts the op as 0. Registering it where the op is
# defined reaches every tool that imports our package, also one that does so only through a
# config's custom_imports (mmdet's get_flops.py). mmengine.analysis costs a few ms on top of
# what importing the models already loads.
register_flop_handles()

__all__ = ['ms_deform_sample', 'ms_deform_sample_backward', 'ms_deform_attn',
           'ms_deform_attn_forward', 'ms_deform_attn_backward',
           'safe_im2col_step', 'level_shapes', 'ms_deform_attn_decomposition',
           'export_decompositions', 'register_inductor_decomposition']

"""Multi-scale deformable attention (Deformable DETR, Sec. 4.1, Eq. 3).

The sampling equation is :func:`mmdet_ddetr.ops.ms_deform_sample` (plain PyTorch, one
``grid_sample`` per level). Where it runs:

* eager on the CPU: that function itself, and autograd traces it (autograd's backward is
  1.06x / 0.92x / 1.32x as fast as the op's written-out one at 426 / 1700 encoder and 300
  decoder queries, ``tools/analysis_tools/benchmark_msda.py --contests backward``);
* on CUDA, under ``torch.compile`` / ``torch.export`` and in the JIT trace of the FLOP counter:
  the operator ``torch.ops.mmdet_ddetr.ms_deform_attn`` (:mod:`mmdet_ddetr.ops`), i.e. mmcv's
  compiled kernel, one opaque node with our lowering, the ONNX decomposition, the FLOP rule.
  Both run the same forward on the CPU, so outputs are bit-identical.

This module decides *how* the sampling is called so that it always works:

* mmcv's CUDA kernel has no bfloat16; under bf16 autocast (or with a bf16 model) the op runs as
  a float32 island and the result is cast back.
* Level shapes are handed to the op as Python ints (symbolic under ``torch.compile``), which
  avoids one device-to-host copy per level and per layer on the PyTorch path.
* The op reduces ``im2col_step`` to a divisor of the batch, so any batch size (e.g. 65) runs.

It also records sampling locations and attention weights on request, for visualisation.
"""
from typing import List, Optional, Sequence, Tuple

import torch
from mmcv.ops import MultiScaleDeformableAttention
from torch import Tensor

from mmdet.registry import MODELS
from ...ops import level_shapes, ms_deform_attn, ms_deform_sample, safe_im2col_step

# dtypes mmcv's compiled kernel implements; anything else runs as a float32 island.
_KERNEL_DTYPES = (torch.float32, torch.float16, torch.float64)


@MODELS.register_module()
class MSDeformAttention(MultiScaleDeformableAttention):
    """Multi-scale deformable attention with a batch-safe ``im2col_step``.

    Same parameters, initialisation and state-dict layout as
    :class:`mmcv.ops.MultiScaleDeformableAttention` (``sampling_offsets``,
    ``attention_weights``, ``value_proj``, ``output_proj``); see that class for the arguments.
    Sampling offsets are laid out ``(heads, levels, points, 2)`` with ``(x, y)`` order, and the
    softmax runs jointly over ``levels * points`` per head, as in the official code.

    Set :attr:`record` to ``True`` to keep the last call's ``sampling_locations``
    (bs, num_query, heads, levels, points, 2) and ``attention_weights``
    (bs, num_query, heads, levels, points) in :attr:`last_sampling`; recording only stores
    references and never changes the output. The output dropout is mmcv's ``nn.Dropout``
    (``FastDropoutMSDeformAttention`` is the opt-in CPU speed variant).
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.record = False
        self.last_sampling: Optional[Tuple[Tensor, Tensor]] = None

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                reference_points: Optional[Tensor] = None,
                spatial_shapes: Optional[Tensor] = None,
                level_start_index: Optional[Tensor] = None,
                spatial_shape_list: Optional[Sequence[Tuple[int, int]]] = None,
                **kwargs) -> Tensor:
        """Attend from each query to a few sampled points around its reference.

        Args:
            query (Tensor): (bs, num_query, dim) (``batch_first``) or (num_query, bs, dim).
            key (Tensor, optional): Unused; kept for the mmcv attention interface.
            value (Tensor, optional): (bs, num_value, dim); defaults to ``query``.
            identity (Tensor, optional): Residual added to the output; defaults to ``query``.
            query_pos (Tensor, optional): Added to ``query`` before predicting offsets.
            key_padding_mask (Tensor, optional): (bs, num_value), True at padding; those
                values are zeroed so bilinear samples near the border do not read padding.
            reference_points (Tensor): (bs, num_query, num_levels, 2) normalised (x, y), or
                (bs, num_query, num_levels, 4) boxes (cx, cy, w, h).
            spatial_shapes (Tensor): (num_levels, 2) int64 (H_l, W_l).
            level_start_index (Tensor): (num_levels,) start of each level in ``value``.
            spatial_shape_list (list[tuple[int, int]], optional): ``spatial_shapes`` as Python
                ints; saves host syncs on the CPU path.

        Returns:
            Tensor: Same shape as ``query``.
        """
        if value is None:
            value = query
        if identity is None:
            identity = query
        if query_pos is not None:
            query = query + query_pos
        if not self.batch_first:
            query = query.permute(1, 0, 2)
            value = value.permute(1, 0, 2)

        bs, num_query, _ = query.shape
        num_value = value.shape[1]
        value = self.value_proj(value)
        if key_padding_mask is not None:
            value = value.masked_fill(key_padding_mask[..., None], 0.0)
        value = value.view(bs, num_value, self.num_heads, -1)
        sampling_offsets = self.sampling_offsets(query).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points, 2)
        attention_weights = self.attention_weights(query).view(
            bs, num_query, self.num_heads, self.num_levels * self.num_points)
        attention_weights = attention_weights.softmax(-1).view(
            bs, num_query, self.num_heads, self.num_levels, self.num_points)
        sampling_locations = self.sampling_locations(reference_points, sampling_offsets,
                                                     spatial_shapes)
        if self.record:
            self.last_sampling = (sampling_locations.detach(), attention_weights.detach())

        output = self._deform_sample(value, spatial_shapes, level_start_index,
                                     sampling_locations, attention_weights,
                                     spatial_shape_list)
        output = self.output_proj(output)
        if not self.batch_first:
            output = output.permute(1, 0, 2)
        return self.dropout(output) + identity

    def sampling_locations(self, reference_points: Tensor, sampling_offsets: Tensor,
                           spatial_shapes: Tensor) -> Tensor:
        """Normalised (x, y) sampling locations, (bs, num_query, heads, levels, points, 2).

        Point references move by ``offset / (W_l, H_l)`` (offsets are in level pixels); box
        references move by ``offset / num_points * (w, h) / 2`` so the points stay inside a box
        scaled to the reference box (the two-stage / refine variants).
        """
        if reference_points.shape[-1] == 2:
            offset_normalizer = spatial_shapes.flip(-1).to(sampling_offsets.dtype)
            return (reference_points[:, :, None, :, None, :] +
                    sampling_offsets / offset_normalizer[None, None, None, :, None, :])
        if reference_points.shape[-1] == 4:
            return (reference_points[:, :, None, :, None, :2] +
                    sampling_offsets / self.num_points *
                    reference_points[:, :, None, :, None, 2:] * 0.5)
        raise ValueError('reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) '
                         f'coordinates, got {reference_points.shape[-1]}')

    def _deform_sample(self, value: Tensor, spatial_shapes: Tensor,
                       level_start_index: Tensor, sampling_locations: Tensor,
                       attention_weights: Tensor,
                       spatial_shape_list: Optional[Sequence[Tuple[int, int]]]) -> Tensor:
        """Sample with the reference (eager CPU, autograd) or the operator (everywhere else)."""
        out_dtype = value.dtype
        if value.dtype not in _KERNEL_DTYPES or sampling_locations.dtype not in _KERNEL_DTYPES:
            # bf16 (autocast or a bf16 model): mmcv's kernel has no bf16 -> float32 island.
            value = value.float()
        sampling_locations = sampling_locations.to(value.dtype)
        attention_weights = attention_weights.to(value.dtype)
        # Flat [H_0, W_0, ...]; empty lets the CPU kernel read the tensor (and CUDA not care).
        shape_list: List[int] = ([n for shape in spatial_shape_list for n in shape]
                                 if spatial_shape_list is not None else [])
        if value.device.type == 'cpu' and not torch.compiler.is_compiling() and \
                not torch.jit.is_tracing():
            output = ms_deform_sample(value, level_shapes(spatial_shapes, shape_list),
                                      sampling_locations, attention_weights)
            return output.to(out_dtype)
        if torch.jit.is_tracing():
            # The JIT tracer hands sizes over as traced values; the op's schema wants ints.
            shape_list = [int(n) for n in shape_list]
        output = ms_deform_attn(value, spatial_shapes, level_start_index, sampling_locations,
                                attention_weights, shape_list, self.im2col_step)
        return output.to(out_dtype)


__all__ = ['MSDeformAttention', 'safe_im2col_step']

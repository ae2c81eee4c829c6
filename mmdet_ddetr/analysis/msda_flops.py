"""FLOP handle of the deformable sampling op, registered with mmengine's FLOP counter.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` (what mmdet's
``tools/analysis_tools/get_flops.py`` and our tool both use) starts every analysis from the
module-level table ``_DEFAULT_SUPPORTED_FLOP_OPS``. A traced ``mmdet_ddetr::ms_deform_attn``
node without an entry there counts 0 and is only reported as unsupported.
:func:`register_flop_handles` adds the entry; :mod:`mmdet_ddetr.ops.ms_deform_attn_op` calls it
when it defines the op, so that a tool which imports our package only through a config's
``custom_imports`` counts the op like ours does. The rule is explained in
:mod:`mmdet_ddetr.analysis.flops`.

This module imports neither mmdet nor our models: it is loaded while the op is defined, before
the models exist.
"""
import warnings
from typing import Any, List

#: Multiply-adds per interpolated channel: 4 bilinear taps.
BILINEAR_TAPS = 4

#: Traced node kinds that perform the whole sampling and weighting: our operator, its
#: autograd-free twin (emitted by inductor's decomposition), and mmcv's CUDA autograd function
#: (mmcv's own ``MultiScaleDeformableAttention`` traced on a GPU).
MSDA_OPS = ('mmdet_ddetr::ms_deform_attn', 'mmdet_ddetr::ms_deform_attn_forward',
            'prim::PythonOp.MultiScaleDeformableAttnFunction')


def msda_sampling_flops(batch: int, num_query: int, num_heads: int, num_levels: int,
                        num_points: int, head_dim: int) -> int:
    """Multiply-adds of MSDA's sampling and weighting (the Linear layers excluded).

    Args:
        batch: Images in the batch.
        num_query: Queries (encoder tokens or decoder queries).
        num_heads: Attention heads.
        num_levels: Feature levels sampled.
        num_points: Sampling points per head and level.
        head_dim: Channels per head (``embed_dims // num_heads``).

    Returns:
        int: ``batch * num_query * num_heads * num_levels * num_points * head_dim * 5``.
    """
    return (batch * num_query * num_heads * num_levels * num_points * head_dim *
            (BILINEAR_TAPS + 1))


def msda_flop_handle(inputs: List[Any], outputs: List[Any]) -> int:
    """FlopAnalyzer handle for a node of :data:`MSDA_OPS`.

    The node's tensor inputs are recognised by rank, which all three signatures share:
    ``value`` (bs, num_value, heads, head_dim) and ``sampling_locations``
    (bs, num_query, heads, levels, points, 2); the other inputs (level shapes and starts,
    attention weights, ints) have other ranks or are not tensors.

    Raises:
        RuntimeError: if the trace lost the shapes of those inputs (the count would be wrong).
    """
    from mmengine.analysis.jit_handles import get_shape
    value_shape = loc_shape = None
    for val in inputs:
        shape = get_shape(val)
        if shape is None:
            continue
        if len(shape) == 4 and value_shape is None:
            value_shape = shape
        elif len(shape) == 6 and shape[-1] == 2:
            loc_shape = shape
    if value_shape is None or loc_shape is None:
        raise RuntimeError('cannot read the value / sampling-location shapes of a deformable '
                           f'sampling node; got input shapes {[get_shape(v) for v in inputs]}')
    bs, num_query, num_heads, num_levels, num_points, _ = loc_shape
    return msda_sampling_flops(bs, num_query, num_heads, num_levels, num_points,
                               value_shape[-1])


def register_flop_handles() -> bool:
    """Make every mmengine ``FlopAnalyzer`` count :data:`MSDA_OPS` with
    :func:`msda_flop_handle` (idempotent; a handle set by the user wins).

    Returns:
        bool: False (with a warning) when this mmengine has no default handle table, in which
        case only our ``tools/analysis_tools/get_flops.py`` counts the op.
    """
    try:
        from mmengine.analysis.complexity_analysis import _DEFAULT_SUPPORTED_FLOP_OPS
    except ImportError as exc:
        warnings.warn('mmengine.analysis has no _DEFAULT_SUPPORTED_FLOP_OPS table '
                      f'({exc}); mmdet\'s get_flops.py will count the deformable sampling as 0. '
                      'Count FLOPs with tools/analysis_tools/get_flops.py instead.')
        return False
    for op in MSDA_OPS:
        _DEFAULT_SUPPORTED_FLOP_OPS.setdefault(op, msda_flop_handle)
    return True


__all__ = ['BILINEAR_TAPS', 'MSDA_OPS', 'msda_sampling_flops', 'msda_flop_handle',
           'register_flop_handles']

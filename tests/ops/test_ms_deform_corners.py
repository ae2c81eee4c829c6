"""The corner-sum formulation of the deformable sampling and inductor's lowering of the op to it:
equal to the ``grid_sample`` path (values and, through the op's backward, gradients), and the
compiled graph really computes it instead of calling the opaque kernel."""
import pytest
import torch
from torch._inductor import config as inductor_config
from torch._inductor.utils import run_and_get_code

from mmdet_ddetr.ops import (ms_deform_attn, ms_deform_sample, ms_deform_sample_corners,
                             register_inductor_decomposition)
from tests.ops.test_ms_deform_attn_op import SHAPES, _inputs


@pytest.mark.parametrize('shapes', [SHAPES, [(3, 7)]], ids=['4-levels-with-1x1', '1-level'])
def test_corner_sum_equals_grid_sample_path(shapes):
    # Locations reach outside [0, 1] (corners that must read zero) and the 1x1 level has every
    # corner but one outside.
    value, spatial_shapes, start, locations, weights = _inputs(shapes=shapes, num_query=11)
    expected = ms_deform_sample(value, shapes, locations, weights)
    torch.testing.assert_close(
        ms_deform_sample_corners(value, spatial_shapes, start, locations, weights), expected,
        rtol=0, atol=1e-13)


def _op(value, spatial_shapes, start, locations, weights):
    return ms_deform_attn(value, spatial_shapes, start, locations, weights, [], 64)


@pytest.mark.parametrize('dtype,atol', [(torch.float64, 1e-13), (torch.float32, 1e-5)])
def test_inductor_lowers_the_op_to_the_corner_sum(dtype, atol):
    register_inductor_decomposition()
    torch._dynamo.reset()
    # Two levels of two points keep the unrolled kernel (16 terms) quick to compile.
    shapes = [(5, 6), (2, 3)]
    inputs = _inputs(shapes=shapes, points=2, num_query=9, dtype=dtype)
    compiled = torch.compile(_op, backend='inductor', dynamic=True, fullgraph=True)
    # Without the on-disk graph cache: its key does not cover the decomposition table, so a
    # hit could hand back code compiled with or without the lowering.
    with inductor_config.patch(fx_graph_cache=False):
        out, code = run_and_get_code(compiled, *inputs)
    # float32: relative as well (the values grow with the number of samples summed)
    torch.testing.assert_close(out, _op(*inputs), rtol=1e-6 if dtype == torch.float32 else 0,
                               atol=atol)
    # The op is computed by a generated kernel, not called (an opaque op would appear as
    # torch.ops.mmdet_ddetr.ms_deform_attn.default in the wrapper code).
    assert 'mmdet_ddetr.ms_deform_attn' not in '\n'.join(code)
    assert 'cpp_fused' in '\n'.join(code)

    # Gradients: the forward is the corner sum, the backward the op's own (grid_sample's).
    value, spatial_shapes, start, locations, weights = _inputs(shapes=shapes, points=2,
                                                              num_query=9, dtype=dtype, seed=1)
    grads = []
    for fn in (compiled, _op):
        leaves = [t.clone().requires_grad_() for t in (value, locations, weights)]
        fn(leaves[0], spatial_shapes, start, leaves[1], leaves[2]).square().sum().backward()
        grads.append([t.grad for t in leaves])
    for got, expected in zip(*grads):
        torch.testing.assert_close(got, expected, rtol=1e-5 if dtype == torch.float32 else 0,
                                   atol=atol)


def test_inductor_calls_the_kernel_where_it_has_no_lowering():
    # bfloat16 on CPU (and every CUDA tensor, tests/cuda) has no fused lowering: the compiled
    # graph calls the eager kernel through the autograd-free twin op, with the same result.
    register_inductor_decomposition()
    torch._dynamo.reset()
    inputs = _inputs(shapes=[(5, 6), (2, 3)], points=2, num_query=9, dtype=torch.bfloat16)
    compiled = torch.compile(_op, backend='inductor', dynamic=True, fullgraph=True)
    with inductor_config.patch(fx_graph_cache=False):
        out, code = run_and_get_code(compiled, *inputs)
    assert 'mmdet_ddetr.ms_deform_attn_forward' in '\n'.join(code)
    torch.testing.assert_close(out, _op(*inputs), rtol=0, atol=0)


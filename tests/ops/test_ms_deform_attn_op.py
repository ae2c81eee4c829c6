"""The ``mmdet_ddetr::ms_deform_attn`` operator: registration checks, gradients equal to autograd
through the eager sampling path, the CUDA kernel's calls into mmcv, and the export decomposition."""
import pytest
import torch

from mmdet_ddetr.ops import (ms_deform_attn, ms_deform_attn_backward, ms_deform_attn_forward,
                             ms_deform_sample)
from mmdet_ddetr.ops import ms_deform_attn_op as op_module
from mmdet_ddetr.ops.ms_deform_attn_op import export_decompositions, level_shapes

SHAPES = [(8, 10), (4, 5), (2, 3), (1, 1)]


def _inputs(shapes=SHAPES, bs=2, num_query=7, heads=3, head_dim=5, points=4,
            dtype=torch.float64, device='cpu', seed=0):
    g = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(bs, num_value, heads, head_dim, generator=g, dtype=dtype)
    # Some locations fall outside [0, 1]: those corners must read zeros.
    locations = torch.rand(bs, num_query, heads, len(shapes), points, 2, generator=g,
                           dtype=dtype) * 1.4 - 0.2
    weights = torch.rand(bs, num_query, heads, len(shapes), points, generator=g, dtype=dtype)
    spatial_shapes = torch.tensor(shapes, dtype=torch.long)
    level_start_index = torch.cat((spatial_shapes.new_zeros(1),
                                   spatial_shapes.prod(1).cumsum(0)[:-1]))
    return [t.to(device) for t in (value, spatial_shapes, level_start_index, locations, weights)]


def _flat(shapes):
    return [n for shape in shapes for n in shape]


@pytest.mark.parametrize('shape_list', [_flat(SHAPES), []], ids=['ints', 'from-tensor'])
def test_values_and_gradients_equal_autograd_through_the_sampling_path(shape_list):
    value, ss, lsi, loc, w = _inputs()
    ours = [t.clone().requires_grad_() for t in (value, loc, w)]
    ref = [t.clone().requires_grad_() for t in (value, loc, w)]
    out = ms_deform_attn(ours[0], ss, lsi, ours[1], ours[2], shape_list, 64)
    expected = ms_deform_sample(ref[0], SHAPES, ref[1], ref[2])
    grad = torch.randn_like(out)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-13)
    for mine, theirs in zip(ours, ref):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=0, atol=1e-13)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('shape_list', [_flat(SHAPES), []], ids=['ints', 'from-tensor'])
def test_opcheck_forward(dtype, shape_list):
    value, ss, lsi, loc, w = _inputs(dtype=dtype)
    args = (value.requires_grad_(), ss, lsi, loc.requires_grad_(), w.requires_grad_(),
            shape_list, 64)
    torch.library.opcheck(torch.ops.mmdet_ddetr.ms_deform_attn.default, args)


def test_opcheck_forward_twin_without_autograd():
    # What inductor calls where it does not lower ms_deform_attn (tests/ops/
    # test_ms_deform_corners.py): the same kernels, no autograd (inputs without grad).
    value, ss, lsi, loc, w = _inputs(dtype=torch.float32)
    torch.library.opcheck(torch.ops.mmdet_ddetr.ms_deform_attn_forward.default,
                          (value, ss, lsi, loc, w, _flat(SHAPES), 64))
    torch.testing.assert_close(ms_deform_attn_forward(value, ss, lsi, loc, w, [], 64),
                               ms_deform_attn(value, ss, lsi, loc, w, [], 64), rtol=0, atol=0)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_opcheck_backward(dtype):
    value, ss, lsi, loc, w = _inputs(dtype=dtype)
    grad = torch.randn(2, 7, 15, dtype=dtype)
    torch.library.opcheck(torch.ops.mmdet_ddetr.ms_deform_attn_backward.default,
                          (grad, value, ss, lsi, loc, w, _flat(SHAPES), 64))


def test_gradcheck_float64():
    value, ss, lsi, loc, w = _inputs(shapes=[(3, 4), (2, 2)], num_query=3, head_dim=2)
    assert torch.autograd.gradcheck(
        lambda v, l, a: ms_deform_attn(v, ss, lsi, l, a, [3, 4, 2, 2], 64),
        [t.requires_grad_() for t in (value, loc, w)])


def test_level_shapes_rejects_a_list_that_does_not_match_the_levels():
    value, ss, lsi, loc, w = _inputs()
    assert level_shapes(ss, []) == SHAPES
    with pytest.raises(ValueError, match='shape_list has 2 ints but spatial_shapes has 4'):
        ms_deform_attn(value, ss, lsi, loc, w, [8, 10], 64)


def test_cuda_kernels_are_registered_for_both_ops():
    for name in ('mmdet_ddetr::ms_deform_attn', 'mmdet_ddetr::ms_deform_attn_backward'):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, 'CUDA')
        # The PyTorch path is the default kernel of every other device (CPU included).
        assert torch._C._dispatch_has_kernel_for_dispatch_key(name, 'CompositeExplicitAutograd')


def test_mmcv_extension_exposes_the_kernels_the_cuda_path_calls():
    ext = op_module._mmcv_ext()
    assert callable(ext.ms_deform_attn_forward) and callable(ext.ms_deform_attn_backward)


class _RecordingExt:
    """Stands in for mmcv's extension so the CUDA kernels' argument handling runs on CPU."""

    def __init__(self):
        self.calls = []

    def ms_deform_attn_forward(self, *args, im2col_step):
        self.calls.append(('forward', args, im2col_step))
        value, _, _, loc, _ = args
        return value.new_full((value.shape[0], loc.shape[1], value.shape[2] * value.shape[3]),
                              7.0)

    def ms_deform_attn_backward(self, *args, im2col_step):
        self.calls.append(('backward', args, im2col_step))
        for out in args[-3:]:
            assert out.is_contiguous() and not out.any(), 'outputs must start at zero'
            out.add_(1.0)


def test_cuda_kernels_call_mmcv_with_contiguous_inputs_and_a_batch_dividing_step(monkeypatch):
    ext = _RecordingExt()
    monkeypatch.setattr(op_module, '_mmcv_ext', lambda: ext)
    value, ss, lsi, loc, w = _inputs(bs=65, num_query=3)
    loc_t = loc.transpose(1, 2).contiguous().transpose(1, 2)  # same values, not contiguous
    out = op_module._forward_cuda(value, ss, lsi, loc_t, w, [], 64)
    assert out.shape == (65, 3, 15) and (out == 7).all()
    kind, args, step = ext.calls[-1]
    assert kind == 'forward' and step == 13  # 65 = 5 * 13: largest divisor <= 64
    assert all(a.is_contiguous() for a in args)
    torch.testing.assert_close(args[3], loc, rtol=0, atol=0)

    grad = torch.randn(65, 3, 15, dtype=value.dtype)
    grads = op_module._ms_deform_attn_backward_cuda(grad, value, ss, lsi, loc_t, w, [], 64)
    kind, args, step = ext.calls[-1]
    assert kind == 'backward' and step == 13 and len(args) == 9
    assert [g.shape for g in grads] == [value.shape, loc.shape, w.shape]
    assert all((g == 1).all() for g in grads)


def test_export_decomposes_into_grid_sampler_with_dynamic_sizes():
    class Sample(torch.nn.Module):

        def forward(self, value, loc, w):
            ss = torch.tensor(SHAPES)
            lsi = torch.cat((ss.new_zeros(1), ss.prod(1).cumsum(0)[:-1]))
            return ms_deform_attn(value, ss, lsi, loc, w, _flat(SHAPES), 64)

    value, _, _, loc, w = _inputs(dtype=torch.float32)
    batch = torch.export.Dim('batch', min=1, max=64)
    queries = torch.export.Dim('queries', min=2, max=1024)
    ep = torch.export.export(Sample(), (value, loc, w), dynamic_shapes=(
        {0: batch}, {0: batch, 1: queries}, {0: batch, 1: queries}))
    targets = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
    assert 'mmdet_ddetr.ms_deform_attn.default' in targets
    ep = ep.run_decompositions(export_decompositions())
    targets = {str(n.target) for n in ep.graph.nodes if n.op == 'call_function'}
    assert targets & {'aten.grid_sampler.default', 'aten.grid_sampler_2d.default'}
    assert not any(t.startswith('mmdet_ddetr') for t in targets)
    value, _, _, loc, w = _inputs(dtype=torch.float32, bs=3, num_query=11, seed=1)
    torch.testing.assert_close(ep.module()(value, loc, w),
                               ms_deform_sample(value, SHAPES, loc, w), rtol=1e-6, atol=1e-6)


@pytest.mark.cuda
@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
def test_cuda_op_matches_cpu_and_passes_opcheck(dtype):
    cpu = _inputs(dtype=dtype)
    cuda = [t.cuda() for t in cpu]
    args_cpu = [cpu[0].requires_grad_(), cpu[1], cpu[2], cpu[3].requires_grad_(),
                cpu[4].requires_grad_()]
    args_cuda = [cuda[0].requires_grad_(), cuda[1], cuda[2], cuda[3].requires_grad_(),
                 cuda[4].requires_grad_()]
    out_cpu = ms_deform_attn(*args_cpu, [], 64)
    out_cuda = ms_deform_attn(*args_cuda, [], 64)
    grad = torch.randn_like(out_cpu)
    out_cpu.backward(grad)
    out_cuda.backward(grad.cuda())
    # Relative as well as absolute: gradients grow with the number of samples summed.
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(out_cuda.cpu(), out_cpu, **tol)
    for i in (0, 3, 4):
        torch.testing.assert_close(args_cuda[i].grad.cpu(), args_cpu[i].grad, **tol)
    torch.library.opcheck(torch.ops.mmdet_ddetr.ms_deform_attn.default, (*args_cuda, [], 64))
    grad_cuda = torch.randn_like(out_cuda)
    ms_deform_attn_backward(grad_cuda, *[t.detach() for t in args_cuda], [], 64)

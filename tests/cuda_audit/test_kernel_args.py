"""What our dispatch hands mmcv's CUDA ``ms_deform_attn_forward`` / ``backward`` (recorded by a
stand-in for mmcv's ``_ext`` functions), in the training step and predict of every Deformable
DETR variant, and compared with what mmcv's own ``MultiScaleDeformableAttnFunction`` passes for
the same inputs.

Proven: dtypes, shapes, devices, contiguity, int64 level shapes on the value's device, an
``im2col_step`` the kernel accepts, zero-initialised gradient buffers. Not proven: the CUDA
kernel's numbers (tests/cuda does that on a GPU). SMCA variants call no deformable kernel.
"""
import contextlib

import pytest
import torch

from .conftest import PRECISIONS, VARIANTS, audit, run_audit
from .fake_cuda import (CUDA, CpuKeyedFakeCudaTensor, FakeCudaMode, cuda_allowed,
                        recording_ext)

DDETR = [v for v in VARIANTS if v.startswith('ddetr')]
KERNEL_DTYPES = (torch.float32, torch.float16)


def kernel_problems(calls):
    problems = []
    for call in calls:
        args = call.args
        value = args['value']
        for name, a in args.items():
            if a['device'] != CUDA or not a['contiguous']:
                problems.append(f'{call.name} {name}: {a}')
        for name in ('spatial_shapes', 'level_start_index'):
            if args[name]['dtype'] != torch.int64:
                problems.append(f'{call.name} {name} is {args[name]["dtype"]}')
        floats = [n for n in args if n not in ('spatial_shapes', 'level_start_index')]
        if value['dtype'] not in KERNEL_DTYPES or \
                any(args[n]['dtype'] != value['dtype'] for n in floats):
            problems.append(f'{call.name} dtypes {[args[n]["dtype"] for n in floats]}')
        batch = value['shape'][0]
        if batch % min(batch, call.im2col_step):
            problems.append(f'{call.name} im2col_step {call.im2col_step} for batch {batch}')
        if call.name == 'backward' and not all(call.zero_buffers.values()):
            problems.append(f'gradient buffers not zero: {call.zero_buffers}')
    return problems


@pytest.mark.parametrize('precision', list(PRECISIONS))
@pytest.mark.parametrize('variant', DDETR)
def test_kernel_arguments_in_the_model(variant, precision):
    run = audit(variant, precision)
    assert run.ext.of('forward') and run.ext.of('backward'), 'kernel never called'
    assert not kernel_problems(run.ext.calls), kernel_problems(run.ext.calls)


def _inputs(dtype, wrap):
    g = torch.Generator().manual_seed(0)
    shapes = [(3, 4), (2, 2)]
    bs, heads, dim, q, pts = 3, 2, 4, 5, 2
    value = torch.randn(bs, sum(h * w for h, w in shapes), heads, dim, generator=g)
    loc = torch.rand(bs, q, heads, len(shapes), pts, 2, generator=g)
    weights = torch.rand(bs, q, heads, len(shapes), pts, generator=g)
    spatial = torch.tensor(shapes)
    start = torch.tensor([0, 12])
    leaves = [wrap(value.to(dtype)).requires_grad_(), wrap(spatial), wrap(start),
              wrap(loc).requires_grad_(), wrap(weights).requires_grad_()]
    return leaves, shapes


def _recorded(call_kernel, dtype, plant=None):
    mode = FakeCudaMode(CpuKeyedFakeCudaTensor)
    with cuda_allowed(), recording_ext() as ext, mode:
        (value, spatial, start, loc, weights), shapes = _inputs(dtype, mode.wrapper)
        with plant(ext) if plant else contextlib.nullcontext():
            out = call_kernel(value, spatial, start, loc, weights, shapes)
            out.float().sum().backward()
        for leaf in (value, loc, weights):
            assert leaf.grad is not None and leaf.grad.dtype == leaf.dtype, \
                (leaf.dtype, leaf.grad is not None and leaf.grad.dtype)
    return ext.calls


def ours(value, spatial, start, loc, weights, shapes):
    return torch.ops.mmdet_ddetr.ms_deform_attn(value, spatial, start, loc, weights,
                                                [n for s in shapes for n in s], 64)


def mmcv(value, spatial, start, loc, weights, shapes):
    from mmcv.ops.multi_scale_deform_attn import MultiScaleDeformableAttnFunction
    return MultiScaleDeformableAttnFunction.apply(value, spatial, start, loc, weights, 64)


def _compare(ours_calls, mmcv_calls):
    assert [c.name for c in ours_calls] == [c.name for c in mmcv_calls] == ['forward', 'backward']
    for a, b in zip(ours_calls, mmcv_calls):
        for name in a.args:
            drop = ('contiguous', )  # ours must be contiguous (checked); mmcv trusts callers
            assert {k: v for k, v in a.args[name].items() if k not in drop} == \
                {k: v for k, v in b.args[name].items() if k not in drop}, (a.name, name)
        batch = a.args['value']['shape'][0]
        assert min(batch, a.im2col_step) == min(batch, b.im2col_step), (a.name, 'im2col_step')
        assert a.zero_buffers == b.zero_buffers
    assert not kernel_problems(ours_calls), kernel_problems(ours_calls)


@pytest.mark.parametrize('dtype', [torch.float32, torch.float16], ids=['fp32', 'fp16-mixed'])
def test_our_dispatch_passes_what_mmcv_passes(dtype):
    """The value in ``dtype``, locations and weights float32 (what autocast leaves them).

    fp16-mixed was a finding of this audit: the op called directly handed the CUDA kernel a
    float16 value beside float32 locations/weights (ms_deform_attn_op.py now casts them to the
    value's dtype, as mmcv's Function does, and returns each gradient in its input's dtype).
    """
    _compare(_recorded(ours, dtype), _recorded(mmcv, dtype))


def test_planted_wrong_dtype_into_the_kernel_is_caught():
    @contextlib.contextmanager
    def double_locations(ext):
        record = ext.ms_deform_attn_forward

        def buggy(value, shapes, start, loc, weights, im2col_step):
            return record(value, shapes, start, loc.double(), weights, im2col_step=im2col_step)
        ext.ms_deform_attn_forward = buggy
        import mmcv._ext as module
        saved, module.ms_deform_attn_forward = module.ms_deform_attn_forward, buggy
        try:
            yield
        finally:
            module.ms_deform_attn_forward = saved
    with pytest.raises(AssertionError, match='sampling_locations'):
        _compare(_recorded(ours, torch.float32, double_locations), _recorded(mmcv, torch.float32))


def test_planted_uninitialised_gradient_buffer_is_caught():
    def plant(model, ext):
        record = ext.ms_deform_attn_backward

        def buggy(*args, im2col_step):
            args[6].elem.fill_(1.0)  # as if made with empty_like
            return record(*args, im2col_step=im2col_step)
        import mmcv._ext as module
        saved = module.ms_deform_attn_backward

        @contextlib.contextmanager
        def swap():
            module.ms_deform_attn_backward = buggy
            try:
                yield
            finally:
                module.ms_deform_attn_backward = saved
        return swap()

    run = run_audit('ddetr', 'fp32', plant)
    assert any('gradient buffers not zero' in p for p in kernel_problems(run.ext.calls))

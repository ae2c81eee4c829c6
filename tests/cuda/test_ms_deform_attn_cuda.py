"""MSDeformAttention on CUDA (mmcv's kernel) against our CPU path: outputs and gradients.

Everything goes through the module's public forward/backward, so the tests hold whichever op
the module dispatches to on the GPU. The attention output is compared without the residual
(``identity`` = 0), which would otherwise hide errors in it. Errors are norm-wise relative,
``||cuda - cpu|| / ||cpu||``.

Bounds: float32 1e-5 (same maths, other summation order and atomics). Under autocast, against
the float32 CPU result: the output within 1e-2 (fp16) / 3e-2 (bf16), the gradients of value,
attention weights and the projections within 2e-2 / 5e-2 (the projections run in half
precision, ~5e-4 / ~4e-3 relative each). The gradients that flow through the sampling
locations (``sampling_offsets``, ``query``) get 0.25 for both: bilinear sampling is linear
inside a pixel cell, so its gradient with respect to the location jumps when a point crosses a
cell edge, and offsets rounded to half precision move every point near an edge across it.
That error does not shrink with more careful arithmetic; it grows with the share of points
near an edge. Measured on the CPU path under autocast (same rounding of the projections and
locations): output 2.2e-3 / 8.0e-3, other gradients <= 3.0e-3 / 1.3e-2, location gradients
3.4e-2 to 8.4e-2 (fp16, batch 2 and 65) and 3.5e-2 to 6.7e-2 (bf16). A wrong kernel (sign,
scale, index) is off by about 1 or more. The CUDA numbers are written to the run's report.
"""
import copy
from contextlib import nullcontext
from typing import Dict, Optional, Tuple

import pytest
import torch

from mmdet_ddetr.models.deformable_detr import MSDeformAttention
from .conftest import record, rel_err

pytestmark = pytest.mark.cuda

SHAPES = [(8, 10), (4, 5), (2, 3)]
DIMS, HEADS, POINTS = 32, 4, 2
FP32_BOUND = 1e-5
#: dtype -> bounds against float32 of the output, the gradients, and the gradients that flow
#: through the sampling locations (see the module docstring).
HALF_BOUNDS = {torch.float16: dict(output=1e-2, grad=2e-2, location=0.25),
               torch.bfloat16: dict(output=3e-2, grad=5e-2, location=0.25)}
#: Gradients that flow through the sampling locations.
LOCATION_GRADS = ('grad.sampling_offsets', 'grad.query')


def make_module(levels: int = 2, batch_first: bool = True) -> MSDeformAttention:
    """mmcv's initialisation, then every weight moved a little so that offsets and weights
    depend on the query (at initialisation they do not) and all gradients are non-trivial."""
    torch.manual_seed(0)
    module = MSDeformAttention(embed_dims=DIMS, num_heads=HEADS, num_levels=levels,
                               num_points=POINTS, dropout=0.0, batch_first=batch_first)
    module.init_weights()
    with torch.no_grad():
        for param in module.parameters():
            param.add_(torch.randn_like(param) * 0.05)
    return module


def make_inputs(bs: int, levels: int = 2, num_query: int = 6, boxes: bool = False,
                batch_first: bool = True, contiguous: bool = True) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(bs * 10 + levels)
    shapes = torch.tensor(SHAPES[:levels])
    sizes = shapes.prod(1)
    num_value = int(sizes.sum())
    query = torch.randn(bs, num_query, DIMS, generator=g)
    value = torch.randn(bs, num_value, DIMS, generator=g)
    if boxes:
        centre = torch.rand(bs, num_query, 1, 2, generator=g) * 0.6 + 0.2
        wh = torch.rand(bs, num_query, 1, 2, generator=g) * 0.3 + 0.05
        ref = torch.cat([centre, wh], -1).expand(-1, -1, levels, -1)
    else:
        ref = (torch.rand(bs, num_query, 1, 2, generator=g) * 0.8 + 0.1).expand(
            -1, -1, levels, -1)
    if contiguous:
        ref = ref.contiguous()
    else:  # strided views, as slices of larger tensors would give
        query = torch.randn(bs, num_query, 2 * DIMS, generator=g)[..., ::2]
        value = torch.randn(bs, num_value, 2 * DIMS, generator=g)[..., 1::2]
    if not batch_first:
        query, value = query.transpose(0, 1), value.transpose(0, 1)
    mask = torch.zeros(bs, num_value, dtype=torch.bool)
    mask[::2, -int(sizes[-1]) // 2:] = True  # padding in every other image
    return dict(query=query, value=value, reference_points=ref, spatial_shapes=shapes,
                level_start_index=torch.cat([sizes.new_zeros(1), sizes.cumsum(0)[:-1]]),
                key_padding_mask=mask)


def same_layout(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` on ``device``, still non-contiguous if it was: ``Tensor.to`` keeps the
    strides of a transposed tensor but makes a sliced one contiguous, so a slice is rebuilt
    there as a slice."""
    moved = tensor.to(device)
    if tensor.is_contiguous() or not moved.is_contiguous():
        return moved
    wide = torch.zeros(*tensor.shape[:-1], 2 * tensor.shape[-1], dtype=tensor.dtype,
                       device=device)
    wide[..., ::2] = moved
    return wide[..., ::2]


def forward_backward(module: MSDeformAttention, inputs: Dict[str, torch.Tensor],
                     device: torch.device, dtype: Optional[torch.dtype] = None
                     ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Output (float32, CPU) and the gradients of a fixed linear function of it."""
    module = copy.deepcopy(module).to(device)
    args = {k: same_layout(v, device) for k, v in inputs.items()}
    for key in ('query', 'value'):
        args[key] = args[key].detach().requires_grad_()
    autocast = torch.autocast(device.type, dtype=dtype) if dtype else nullcontext()
    with autocast:
        out = module(identity=torch.zeros_like(args['query']), **args)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(7))
    (out.float() * weights.to(device)).sum().backward()
    grads = {'value': args['value'].grad, 'query': args['query'].grad,
             'sampling_offsets': module.sampling_offsets.weight.grad,
             'attention_weights': module.attention_weights.weight.grad,
             'value_proj': module.value_proj.weight.grad,
             'output_proj': module.output_proj.weight.grad}
    for name, grad in grads.items():
        assert grad is not None, f'no gradient for {name}'
    return out.detach().float().cpu(), {k: v.float().cpu() for k, v in grads.items()}


def compare(name: str, module, inputs, device, dtype=None) -> None:
    """Relative errors of the output and gradients against the float32 CPU run, bounded by
    :data:`FP32_BOUND` (no ``dtype``) or :data:`HALF_BOUNDS` (autocast ``dtype``)."""
    ref_out, ref_grads = forward_backward(module, inputs, torch.device('cpu'))
    out, grads = forward_backward(module, inputs, device, dtype)
    errors = {'output': rel_err(out, ref_out)}
    errors.update({f'grad.{k}': rel_err(grads[k], ref_grads[k]) for k in ref_grads})
    record(name, dtype=str(dtype or torch.float32), **errors)
    bounds = HALF_BOUNDS.get(dtype, dict(output=FP32_BOUND, grad=FP32_BOUND,
                                         location=FP32_BOUND))
    bound = {k: bounds['output'] if k == 'output' else
             bounds['location'] if k in LOCATION_GRADS else bounds['grad'] for k in errors}
    bad = {k: v for k, v in errors.items() if not v <= bound[k]}
    assert not bad, f'{name}: over the bound {bounds}: {bad}; all errors: {errors}'


@pytest.mark.parametrize('bs', [1, 2, 65, 128])
def test_fp32_matches_cpu_for_any_batch(device, bs):
    """65 is no multiple of mmcv's im2col_step (64): the module must pick a step dividing it."""
    compare(f'msda_fp32_bs{bs}', make_module(), make_inputs(bs), device)


@pytest.mark.parametrize('levels', [1, 3])
@pytest.mark.parametrize('boxes', [False, True], ids=['points', 'boxes'])
def test_fp32_levels_and_box_references(device, levels, boxes):
    compare(f'msda_fp32_l{levels}_{"boxes" if boxes else "points"}', make_module(levels),
            make_inputs(2, levels, boxes=boxes), device)


@pytest.mark.parametrize('batch_first', [True, False])
def test_fp32_non_contiguous_inputs(device, batch_first):
    inputs = make_inputs(3, batch_first=batch_first, contiguous=False)
    for key in ('query', 'value', 'reference_points'):
        assert not same_layout(inputs[key], device).is_contiguous(), key
    compare(f'msda_fp32_noncontig_bf{int(batch_first)}', make_module(batch_first=batch_first),
            inputs, device)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('bs', [2, 65])
def test_autocast_close_to_fp32(device, dtype, bs):
    compare(f'msda_{str(dtype)[6:]}_bs{bs}', make_module(), make_inputs(bs), device, dtype)



@pytest.mark.cuda
def test_inductor_compiles_the_op_to_the_mmcv_kernel(device):
    """torch.compile (inductor) on the GPU: the graph calls mmcv's kernel (through the op's
    autograd-free twin, since the CPU lowering does not apply) and gives eager's result. On the
    CPU rehearsal the graph computes the fused corner sum instead."""
    from torch._inductor import config as inductor_config
    from torch._inductor.utils import run_and_get_code

    from mmdet_ddetr.ops import ms_deform_attn, register_inductor_decomposition
    from tests.ops.test_ms_deform_attn_op import _inputs

    def op(value, spatial_shapes, start, locations, weights):
        return ms_deform_attn(value, spatial_shapes, start, locations, weights, [], 64)

    register_inductor_decomposition()
    torch._dynamo.reset()
    inputs = [t.to(device) for t in _inputs(shapes=[(5, 6), (2, 3)], points=2, num_query=9,
                                            dtype=torch.float32)]
    compiled = torch.compile(op, backend='inductor', dynamic=True, fullgraph=True)
    with inductor_config.patch(fx_graph_cache=False):
        out, code = run_and_get_code(compiled, *inputs)
    calls_kernel = 'mmdet_ddetr.ms_deform_attn_forward' in '\n'.join(code)
    assert calls_kernel == (device.type == 'cuda')
    expected = op(*inputs)
    record('inductor_cuda_op', max_abs=float((out - expected).abs().max()))
    torch.testing.assert_close(out, expected, rtol=0, atol=0 if calls_kernel else 1e-5)

import pytest
import torch
from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch

from mmdet_ddetr.ops.ms_deform_attn_op import ms_deform_sample


def _inputs(shapes, bs=2, num_query=7, heads=3, head_dim=5, points=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in shapes)
    value = torch.randn(bs, num_value, heads, head_dim, generator=g, dtype=torch.float64)
    # Some locations fall outside [0, 1]: those corners must read zeros, as in mmcv.
    locations = torch.rand(bs, num_query, heads, len(shapes), points, 2, generator=g,
                           dtype=torch.float64) * 1.4 - 0.2
    weights = torch.rand(bs, num_query, heads, len(shapes) * points, generator=g,
                         dtype=torch.float64).softmax(-1).view(bs, num_query, heads,
                                                               len(shapes), points)
    return value, locations, weights


@pytest.mark.parametrize('shapes', [[(8, 10), (4, 5), (2, 3), (1, 1)], [(6, 7)],
                                    [(1, 9), (9, 1)]])
@pytest.mark.parametrize('num_query', [1, 7, 60])
def test_matches_mmcv_pytorch_path_in_value_and_gradients(shapes, num_query):
    ours_in = [t.requires_grad_() for t in _inputs(shapes, num_query=num_query)]
    ref_in = [t.detach().clone().requires_grad_() for t in ours_in]
    ours = ms_deform_sample(ours_in[0], shapes, *ours_in[1:])
    ref = multi_scale_deformable_attn_pytorch(ref_in[0], shapes, *ref_in[1:])
    assert ours.shape == ref.shape == (2, num_query, 15)
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)
    grad = torch.randn_like(ref)
    ours.backward(grad)
    ref.backward(grad)
    for a, b in zip(ours_in, ref_in):
        torch.testing.assert_close(a.grad, b.grad, rtol=0, atol=1e-12)


def test_each_level_contributes_its_weighted_samples():
    # A constant map per level, all locations inside: the output is sum_l c_l * sum_k A_lk.
    shapes = [(4, 4), (2, 2)]
    value, _, weights = _inputs(shapes, heads=1, head_dim=1)
    value = torch.cat([torch.full((2, 16, 1, 1), 3.0), torch.full((2, 4, 1, 1), -2.0)], 1)
    locations = torch.full((2, 7, 1, 2, 4, 2), 0.5, dtype=torch.float64)
    out = ms_deform_sample(value.double(), shapes, locations, weights)
    expect = 3.0 * weights[:, :, :, 0].sum(-1) - 2.0 * weights[:, :, :, 1].sum(-1)
    torch.testing.assert_close(out, expect)


def test_shapes_that_do_not_cover_value_are_a_clear_error():
    value, locations, weights = _inputs([(8, 10), (4, 5)])
    with pytest.raises(ValueError, match=r'cover 81 values, but value has 100'):
        ms_deform_sample(value, [(8, 10), (1, 1)], locations, weights)

import pytest
import torch

from mmdet_ddetr.models.deformable_detr import MSDeformAttention, safe_im2col_step


def _inputs(bs=2, levels=((8, 10), (4, 5)), dims=32, num_query=7, ref_dim=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    num_value = sum(h * w for h, w in levels)
    shapes = torch.tensor(levels)
    start = torch.cat([shapes.new_zeros(1), shapes.prod(1).cumsum(0)[:-1]])
    ref = torch.rand(bs, num_query, len(levels), ref_dim, generator=g)
    return dict(query=torch.randn(bs, num_query, dims, generator=g),
                value=torch.randn(bs, num_value, dims, generator=g),
                reference_points=ref, spatial_shapes=shapes, level_start_index=start)


def _attn(levels=2, dims=32, heads=4, points=3):
    torch.manual_seed(0)
    attn = MSDeformAttention(embed_dims=dims, num_heads=heads, num_levels=levels,
                             num_points=points, batch_first=True).eval()
    # non-zero offsets/weights so the test exercises the sampling
    for p in attn.parameters():
        p.data.add_(torch.randn_like(p) * 0.1)
    return attn


@pytest.mark.parametrize('batch,step,expected', [(1, 64, 1), (64, 64, 64), (65, 64, 13),
                                                 (128, 64, 64), (96, 64, 48), (67, 64, 1),
                                                 (2, 64, 2)])
def test_im2col_step_always_divides_batch(batch, step, expected):
    chosen = safe_im2col_step(batch, step)
    assert batch % chosen == 0 and chosen <= step
    assert chosen == expected


def test_matches_mmcv_module():
    """Same maths and state_dict as mmcv's MultiScaleDeformableAttention. Our CPU sampling
    sums levels in another order than mmcv's PyTorch path, so the two agree to float64
    rounding rather than bit for bit."""
    from mmcv.ops import MultiScaleDeformableAttention
    ours = _attn().double()
    theirs = MultiScaleDeformableAttention(embed_dims=32, num_heads=4, num_levels=2,
                                           num_points=3, batch_first=True).eval().double()
    theirs.load_state_dict(ours.state_dict())
    for ref_dim in (2, 4):
        x = {k: v.double() if torch.is_tensor(v) and v.is_floating_point() else v
             for k, v in _inputs(ref_dim=ref_dim).items()}
        mask = torch.zeros(2, x['value'].shape[1], dtype=torch.bool)
        mask[1, -7:] = True
        a = ours(**x, key_padding_mask=mask, spatial_shape_list=[(8, 10), (4, 5)])
        b = theirs(**x, key_padding_mask=mask)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-13)


def test_padding_values_do_not_leak():
    attn = _attn()
    x = _inputs()
    mask = torch.zeros(2, x['value'].shape[1], dtype=torch.bool)
    mask[:, 60:80] = True  # bottom rows of level 0
    out1 = attn(**x, key_padding_mask=mask)
    x['value'][:, 60:80] = 1e3 * torch.randn(2, 20, 32)
    out2 = attn(**x, key_padding_mask=mask)
    torch.testing.assert_close(out1, out2)


def test_recording_does_not_change_output_and_matches_used_locations():
    attn = _attn()
    x = _inputs()
    plain = attn(**x)
    attn.record = True
    recorded = attn(**x)
    assert torch.equal(plain, recorded)
    locations, weights = attn.last_sampling
    assert locations.shape == (2, 7, 4, 2, 3, 2)
    assert weights.shape == (2, 7, 4, 2, 3)
    torch.testing.assert_close(weights.sum((-1, -2)), torch.ones(2, 7, 4))
    # locations are those the op samples: re-running the op on them reproduces the output
    from mmcv.ops.multi_scale_deform_attn import multi_scale_deformable_attn_pytorch
    value = attn.value_proj(x['value']).view(2, -1, 4, 8)
    out = multi_scale_deformable_attn_pytorch(value, [(8, 10), (4, 5)], locations, weights)
    torch.testing.assert_close(attn.output_proj(out) + x['query'], plain)


def test_bf16_runs_as_float32_island():
    attn = _attn()
    x = _inputs()
    ref = attn(**x)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        out = attn(**x)
    assert out.dtype in (torch.bfloat16, torch.float32)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), ref, atol=0.1, rtol=0.05)


def test_bad_reference_dim_is_a_clear_error():
    attn = _attn()
    x = _inputs(ref_dim=3)
    with pytest.raises(ValueError, match='reference_points must end in 2'):
        attn(**x)


def test_embed_dims_not_divisible_by_heads_fails_at_build():
    with pytest.raises(ValueError, match='divisible by num_heads'):
        MSDeformAttention(embed_dims=30, num_heads=4)


def test_initial_offsets_are_radial_and_grow_with_point_index():
    attn = MSDeformAttention(embed_dims=32, num_heads=4, num_levels=2, num_points=3)
    bias = attn.sampling_offsets.bias.view(4, 2, 3, 2)
    assert torch.count_nonzero(attn.sampling_offsets.weight) == 0
    assert torch.count_nonzero(attn.attention_weights.weight) == 0
    # point i sits at (i + 1) x the head's unit direction, on every level
    for i in range(3):
        torch.testing.assert_close(bias[:, :, i], bias[:, :, 0] * (i + 1))
    assert torch.allclose(bias[:, 0], bias[:, 1])

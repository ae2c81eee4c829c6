"""SMCA Gaussian prior: where it peaks, how scales change it, padding, config errors."""
import pytest
import torch
from torch import nn

from mmdet.registry import MODELS
from mmdet_ddetr.models.smca_detr import SMCAGaussianPrior, canonical_scale_type
from mmdet_ddetr.models.smca_detr.base import add_padding_mask
from tests.models.smca_detr.common import small_smca_cfg


def _prior(scale_type='fixed', heads=2, dims=8, smooth=8.0, shared_heads=False):
    prior = SMCAGaussianPrior(embed_dims=dims, num_heads=heads, scale_type=scale_type,
                              smooth=smooth, shared_heads=shared_heads)
    nn.init.zeros_(prior.offset_fc.weight)
    nn.init.zeros_(prior.offset_fc.bias)
    prior.init_weights()
    return prior


def test_peaks_at_predicted_centre():
    prior = _prior(heads=2)
    with torch.no_grad():
        prior.offset_fc.bias.copy_(torch.tensor([0., 0., 1., -1.]))  # head 1: (+1, -1)
    feat = torch.randn(1, 1, 8)
    log_g = prior(feat, torch.tensor([[[3., 2.]]]), (6, 7))  # centre x=3, y=2
    assert log_g.shape == (1, 2, 1, 42)
    assert log_g.max() <= 0
    assert log_g[0, 0, 0].argmax().item() == 2 * 7 + 3
    assert log_g[0, 1, 0].argmax().item() == 1 * 7 + 4
    assert log_g[0, 0, 0, 2 * 7 + 3] == 0
    # log G = -d^2 / beta with the fixed scale
    assert torch.isclose(log_g[0, 0, 0, 0], torch.tensor(-(3.**2 + 2.**2) / 8))


@pytest.mark.parametrize('scale_type', ['head', 'head_xy', 'head_xy_cross'])
def test_larger_scale_widens(scale_type):
    """The official code predicts the inverse width (log G = -s^2 d^2 / beta): a larger paper
    scale (1 / |prediction|) must give a wider prior, i.e. more mass away from the centre."""
    prior = _prior(scale_type)
    centre = torch.tensor([[[4., 4.]]])
    feat = torch.randn(1, 1, 8)
    widths = []
    for pred in (2.0, 1.0, 0.5):  # paper scale 0.5, 1, 2
        with torch.no_grad():
            prior.scale_fc.bias.fill_(pred)
        g = prior(feat, centre, (9, 9))[0, 0, 0].exp()
        widths.append((g > 0.5).sum().item())
        assert g.argmax().item() == 4 * 9 + 4
    assert widths[0] < widths[1] < widths[2]


def test_scale_starts_at_one():
    """scale_fc starts at weight 0 / bias 1: every predicted scale is 1 = the fixed prior."""
    feat = torch.randn(2, 3, 8)
    centre = torch.rand(2, 3, 2) * 5
    fixed = _prior('fixed')(feat, centre, (5, 6))
    for scale_type in ('head', 'head_xy'):
        torch.testing.assert_close(_prior(scale_type)(feat, centre, (5, 6)), fixed)


def test_padding_excluded():
    """Padded keys get -inf before the softmax, even if the Gaussian peaks there."""
    prior = _prior('fixed', heads=2)
    h, w = 4, 5
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[:, :, 3:] = True  # right two columns are padding
    centre = torch.tensor([[[4., 1.]]])  # centre inside the padding
    bias = add_padding_mask(prior(torch.randn(1, 1, 8), centre, (h, w)), mask.flatten(1))
    attn = torch.softmax(bias, -1).view(2, 1, h, w)
    assert torch.all(attn[..., 3:] == 0)
    torch.testing.assert_close(attn.sum((-1, -2)), torch.ones(2, 1))


def test_decoder_layer_ignores_padded_memory():
    """A whole SMCA decoder layer: changing memory at padded cells changes nothing."""
    cfg = small_smca_cfg()['decoder']['layer_cfg']
    torch.manual_seed(0)
    layer = MODELS.build(cfg).eval()
    h, w, d = 3, 4, 32
    mask = torch.zeros(2, h, w, dtype=torch.bool)
    mask[0, 2:, :] = True
    mask[1, :, 3:] = True
    memory, pos = torch.randn(2, h * w, d), torch.randn(2, h * w, d)
    query, qpos = torch.randn(2, 5, d), torch.randn(2, 5, d)
    centres = torch.rand(2, 5, 2) * 3
    kw = dict(query_pos=qpos, key_pos=pos, key_padding_mask=mask.flatten(1), centres=centres,
              spatial_shape=(h, w))
    out = layer(query, key=memory, value=memory, **kw)
    noisy = memory.clone()
    noisy[mask.flatten(1)] = torch.randn(int(mask.sum()), d) * 100
    torch.testing.assert_close(layer(query, key=noisy, value=noisy, **kw), out)


def test_sharp_prior_attends_to_centre_cell():
    """With a tiny beta the co-attention is the value at the centre cell: the prior is really
    added to the logits of nn.MultiheadAttention."""
    cfg = small_smca_cfg(scale_type='fixed')['decoder']['layer_cfg']
    cfg['gaussian_prior_cfg']['smooth'] = 1e-6
    layer = MODELS.build(cfg).eval()
    nn.init.zeros_(layer.gaussian_prior.offset_fc.weight)
    nn.init.zeros_(layer.gaussian_prior.offset_fc.bias)
    h, w, d = 3, 4, 32
    memory = torch.randn(1, h * w, d, dtype=torch.float64)
    layer.double()
    query = torch.randn(1, 1, d, dtype=torch.float64)
    centre = torch.tensor([[[2., 1.]]], dtype=torch.float64)
    log_g = layer.gaussian_prior(query, centre, (h, w))
    out = layer.cross_attn(query=query, key=memory, value=memory,
                           attn_mask=add_padding_mask(log_g, None))
    attn = layer.cross_attn.attn
    v = nn.functional.linear(memory[:, 1 * w + 2], attn.in_proj_weight[2 * d:],
                             attn.in_proj_bias[2 * d:])
    expected = query[:, 0] + attn.out_proj(v)
    torch.testing.assert_close(out[:, 0], expected)


def test_official_names_and_errors():
    assert [canonical_scale_type(f'type{i}') for i in range(1, 5)] == \
        ['fixed', 'head', 'head_xy', 'head_xy_cross']
    with pytest.raises(ValueError, match='scale_type'):
        SMCAGaussianPrior(scale_type='type5')
    cfg = small_smca_cfg(scale_type='banana')
    with pytest.raises(ValueError, match='scale_type'):
        MODELS.build(cfg)
    cfg = small_smca_cfg(dims=30, heads=4)
    with pytest.raises(ValueError, match='divisible|multiple'):
        MODELS.build(cfg)


def test_shared_heads_use_one_modulation():
    prior = SMCAGaussianPrior(embed_dims=8, num_heads=4, scale_type='head_xy', shared_heads=True)
    assert prior.offset_fc.out_features == 2 and prior.scale_fc.out_features == 2
    log_g = prior(torch.randn(2, 3, 8), torch.rand(2, 3, 2) * 4, (4, 5))
    assert log_g.shape == (2, 4, 3, 20)
    assert torch.equal(log_g[:, 0], log_g[:, 3])


@pytest.mark.parametrize('official', ['type1', 'type2', 'type3', 'type4'])
def test_matches_official_layout(official):
    """Re-derive log G in the official tensor layout (queries first, index b * heads + h,
    per-head (x, y) offset pairs, per-head scale groups) and compare."""
    torch.manual_seed(0)
    bs, q, heads, d, (h, w) = 2, 3, 4, 16, (5, 6)
    prior = SMCAGaussianPrior(embed_dims=d, num_heads=heads, scale_type=official, smooth=8.0)
    for p in prior.parameters():
        nn.init.normal_(p)
    feat = torch.randn(bs, q, d, dtype=torch.float64)
    centre = torch.rand(bs, q, 2, dtype=torch.float64) * 4
    prior.double()
    ours = prior(feat, centre, (h, w))  # (bs, heads, q, h*w)

    out = feat.transpose(0, 1)  # (q, bs, d) as the official decoder
    ref = centre.transpose(0, 1).repeat(1, 1, heads)  # (q, bs, 2*heads)
    point = (ref + prior.offset_fc(out)).view(q, bs * heads, 2)
    gy, gx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing='ij')
    grid = torch.stack((gx, gy), 2).float().reshape(-1, 2)[:, None]  # (hw, 1, 2)
    dist = (point[:, None] - grid[None]).pow(2)  # (q, hw, bs*heads, 2)
    k = {'type1': 0, 'type2': 1, 'type3': 2, 'type4': 3}[official]
    if k == 0:
        dist = dist.sum(-1)
    else:
        s = prior.scale_fc(out) ** 2
        if k == 1:
            dist = dist.sum(-1) * s.reshape(q, -1)[:, None]
        else:
            s = s.reshape(q, -1, k)[:, None]
            if k == 3:
                dist = torch.cat([dist, dist.prod(-1, keepdim=True)], -1)
            dist = (dist * s).sum(-1)
    theirs = -dist.abs() / 8.0  # (q, hw, bs*heads)
    torch.testing.assert_close(ours.permute(2, 3, 0, 1).flatten(2), theirs,
                               rtol=1e-12, atol=1e-12)


def test_beta_relative_to_the_map():
    """smooth_ref_cells=R: beta * (min(H, W) / R)^2, so a map R cells high keeps beta and a map
    half as high gets a quarter of it (the same prior as a fraction of the image)."""
    feat = torch.randn(1, 2, 8)
    centre = torch.tensor([[[2., 3.], [5., 1.]]])
    official = _prior('head_xy', smooth=8.0)
    relative = _prior('head_xy', smooth=8.0)
    relative.smooth_ref_cells = 16.0
    torch.testing.assert_close(relative(feat, centre, (16, 20)), official(feat, centre, (16, 20)))
    torch.testing.assert_close(relative(feat, centre, (8, 20)),
                               _prior('head_xy', smooth=2.0)(feat, centre, (8, 20)))
    with pytest.raises(ValueError, match='smooth_ref_cells'):
        SMCAGaussianPrior(embed_dims=8, num_heads=2, smooth_ref_cells=0)


def test_disabled_prior_adds_nothing_and_has_no_parameters():
    """enabled=False (ablation): log G = 0, i.e. the co-attention is DETR's."""
    prior = SMCAGaussianPrior(embed_dims=8, num_heads=2, enabled=False)
    assert not list(prior.parameters())
    log_g = prior(torch.randn(3, 4, 8), torch.rand(3, 4, 2), (5, 6))
    assert log_g.shape == (3, 2, 4, 30) and not log_g.any()

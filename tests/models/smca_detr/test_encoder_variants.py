"""Multi-scale SMCA encoder: intra-scale layers never mix scales, multi-scale layers do."""
import pytest
import torch

from mmdet_ddetr.models.smca_detr import SMCAMultiScaleEncoder

LAYER = dict(self_attn_cfg=dict(embed_dims=16, num_heads=4, dropout=0.0),
             ffn_cfg=dict(embed_dims=16, feedforward_channels=32, ffn_drop=0.0))
SHAPES = [(4, 4), (2, 2), (1, 2)]


def _run(encoder, query, pos, mask=None):
    return encoder(query=query, query_pos=pos, key_padding_mask=mask, spatial_shapes=SHAPES)


@pytest.mark.parametrize('types,mixes', [
    (['intra', 'intra'], False),
    (['intra', 'multi', 'intra'], True),
    (['multi'], True),
    (['intra', 'intra', 'multi', 'intra', 'intra'], True),
])
def test_scale_mixing(types, mixes):
    torch.manual_seed(0)
    enc = SMCAMultiScaleEncoder(layer_types=types, layer_cfg=LAYER).eval()
    assert enc.num_layers == len(types)
    n = sum(h * w for h, w in SHAPES)
    query, pos = torch.randn(2, n, 16), torch.randn(2, n, 16)
    out = _run(enc, query, pos)
    assert out.shape == (2, n, 16)
    changed = query.clone()
    changed[:, 16:] += torch.randn(2, n - 16, 16)  # perturb scales 1 and 2 only
    out2 = _run(enc, changed, pos)
    scale0_changed = not torch.allclose(out2[:, :16], out[:, :16])
    assert scale0_changed == mixes


def test_intra_layer_shares_weights_across_scales():
    """An intra layer applied to the concatenation equals the same layer on each scale."""
    torch.manual_seed(0)
    enc = SMCAMultiScaleEncoder(layer_types=['intra'], layer_cfg=LAYER).eval()
    n = sum(h * w for h, w in SHAPES)
    query, pos = torch.randn(1, n, 16), torch.randn(1, n, 16)
    out = _run(enc, query, pos)
    layer = enc.layers[0]
    start = 0
    for h, w in SHAPES:
        sl = slice(start, start + h * w)
        torch.testing.assert_close(out[:, sl], layer(query[:, sl], pos[:, sl], None))
        start += h * w


def test_bad_layer_types():
    with pytest.raises(ValueError, match='layer_types'):
        SMCAMultiScaleEncoder(layer_types=['intra', 'cross'], layer_cfg=LAYER)
    with pytest.raises(ValueError, match='layer_types'):
        SMCAMultiScaleEncoder(layer_types=[], layer_cfg=LAYER)

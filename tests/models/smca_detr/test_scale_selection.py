"""Scale selection (alpha = softmax(FC(O_q))) and the multi-scale co-attention that uses it."""
import torch
from torch import nn

from mmdet.registry import MODELS
from mmdet_ddetr.models.smca_detr import SMCAScaleSelection
from tests.models.smca_detr.common import small_smca_cfg


def test_weights_are_per_query_and_per_image():
    sel = SMCAScaleSelection(embed_dims=8, num_scales=3)
    nn.init.normal_(sel.fc.weight)
    feat = torch.randn(2, 5, 8)
    alpha = sel(feat)
    assert alpha.shape == (2, 5, 3)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(2, 5))
    assert not torch.allclose(alpha[0], alpha[1])  # images differ
    assert not torch.allclose(alpha[0, 0], alpha[0, 1])  # queries differ
    # each image's weights depend on that image only
    torch.testing.assert_close(sel(feat[1:]), alpha[1:])


def test_starts_uniform_and_can_be_disabled():
    sel = SMCAScaleSelection(embed_dims=8, num_scales=3)
    sel.init_weights()
    torch.testing.assert_close(sel(torch.randn(2, 4, 8)), torch.full((2, 4, 3), 1 / 3))
    off = SMCAScaleSelection(embed_dims=8, num_scales=3, enabled=False)
    assert off.fc is None and not list(off.parameters())
    torch.testing.assert_close(off(torch.randn(2, 4, 8)), torch.full((2, 4, 3), 1 / 3))


def _ms_layer(**kw):
    torch.manual_seed(0)
    layer = MODELS.build(small_smca_cfg(multi_scale=True, **kw)['decoder']['layer_cfg'])
    return layer.eval()


def _inputs(shapes=((4, 4), (2, 2), (1, 1)), d=32, q=5):
    torch.manual_seed(1)
    n = sum(h * w for h, w in shapes)
    memory, pos = torch.randn(2, n, d), torch.randn(2, n, d)
    centres = [torch.rand(2, q, 2) * h for h, _ in shapes]
    return dict(query=torch.randn(2, q, d), key=memory, value=memory,
                query_pos=torch.randn(2, q, d), key_pos=pos, key_padding_mask=None,
                centres=centres, spatial_shapes=list(shapes))


def test_one_hot_selection_equals_single_scale_attention():
    """alpha = one-hot(scale s) -> the layer only attends to scale s (separate softmax)."""
    layer = _ms_layer()
    inputs = _inputs()
    sizes = [16, 4, 1]
    with torch.no_grad():
        layer.scale_selection.fc.weight.zero_()
        layer.scale_selection.fc.bias.copy_(torch.tensor([0., 100., 0.]))
    out = layer(**inputs)
    # changing the memory of scales 0 and 2 must not matter
    noisy = inputs['key'].clone()
    noisy[:, :sizes[0]] += 5 * torch.randn(2, sizes[0], 32)
    noisy[:, -1:] += 5
    torch.testing.assert_close(layer(**dict(inputs, key=noisy, value=noisy)), out)


def test_without_selection_is_average_of_scales():
    layer = _ms_layer(scale_selection=False)
    assert layer.scale_selection.fc is None
    inputs = _inputs()
    out = layer(**inputs)
    assert torch.isfinite(out).all()

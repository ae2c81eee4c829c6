import torch

from mmdet_ddetr.models.common import valid_ratio
from mmdet_ddetr.models.deformable_detr import encoder_reference_points


def test_reference_points_are_pixel_centres_of_the_valid_region():
    shapes = [(4, 6), (2, 3)]
    ratios = torch.ones(1, 2, 2)
    ref = encoder_reference_points(shapes, ratios)
    assert ref.shape == (1, 4 * 6 + 2 * 3, 2, 2)
    # first token of level 0: centre of pixel (0, 0)
    torch.testing.assert_close(ref[0, 0, 0], torch.tensor([0.5 / 6, 0.5 / 4]))
    # last token of level 1
    torch.testing.assert_close(ref[0, -1, 1], torch.tensor([2.5 / 3, 1.5 / 2]))


def test_reference_points_respect_padding():
    """An image valid in its left half: token x-coordinates are relative to the valid width,
    then re-expressed in each level's padded coordinates."""
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[:, :, 4:] = True
    ratios = valid_ratio(mask)[:, None].repeat(1, 2, 1)
    torch.testing.assert_close(ratios[0, 0], torch.tensor([0.5, 1.0]))
    ref = encoder_reference_points([(4, 8), (2, 4)], ratios)
    # pixel (0, 3) of level 0 = last valid column: x = 3.5/4 of valid width = 3.5/8 padded
    torch.testing.assert_close(ref[0, 3, 0, 0], torch.tensor(3.5 / 8))
    # same image location on level 1 (padded coords again)
    torch.testing.assert_close(ref[0, 3, 1, 0], torch.tensor(3.5 / 8))



def test_the_encoder_layer_is_the_shared_post_norm_layer_with_deformable_attention():
    """One encoder layer class for both families; ``DDETREncoderLayer`` stays a registry name
    with deformable attention by default, and the state-dict keys do not change."""
    from mmdet.registry import MODELS
    from mmdet_ddetr.models.common import PostNormEncoderLayer
    from mmdet_ddetr.models.deformable_detr import DDETREncoder, MSDeformAttention

    cfg = dict(self_attn_cfg=dict(embed_dims=32, num_heads=4, num_levels=2, num_points=2,
                                  batch_first=True),
               ffn_cfg=dict(embed_dims=32, feedforward_channels=64))
    aliased = MODELS.build(dict(type='DDETREncoderLayer', **cfg))
    encoder = DDETREncoder(num_layers=1, layer_cfg=cfg)
    for layer in (aliased, encoder.layers[0]):
        assert type(layer) is PostNormEncoderLayer
        assert type(layer.self_attn) is MSDeformAttention
    assert list(aliased.state_dict()) == list(encoder.layers[0].state_dict())
    assert {k.split('.')[0] for k in aliased.state_dict()} == {'self_attn', 'ffn', 'norms'}

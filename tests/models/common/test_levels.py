import torch
from mmdet.models.layers import SinePositionalEncoding
from mmdet.structures import DetDataSample

from mmdet_ddetr.models.common import valid_ratio, valid_size
from mmdet_ddetr.models.common.levels import (flatten_levels, image_padding_mask, is_padded,
                                              level_masks)


def _samples(sizes, pad):
    return [DetDataSample(metainfo=dict(img_shape=s, batch_input_shape=pad)) for s in sizes]


def test_valid_ratio_counts_first_row_and_column():
    mask = torch.ones(2, 5, 10, dtype=torch.bool)
    mask[0, :3, :7] = False
    mask[1, :, :] = False
    ratios = valid_ratio(mask)
    assert ratios.dtype == torch.float32
    torch.testing.assert_close(ratios, torch.tensor([[0.7, 0.6], [1.0, 1.0]]))
    assert valid_size(mask).tolist() == [[7, 3], [10, 5]]


def test_padding_mask_is_bottom_right_and_follows_each_level():
    samples = _samples([(6, 8), (4, 5)], (6, 8))
    assert is_padded(samples) and not is_padded(samples[:1])
    mask = image_padding_mask(samples, torch.device('cpu'))
    assert mask.shape == (2, 6, 8) and mask.dtype == torch.float32
    assert mask[0].sum() == 0
    assert mask[1, :4, :5].sum() == 0 and mask[1, 4:].all() and mask[1, :, 5:].all()
    feats = [torch.zeros(2, 4, 6, 8), torch.zeros(2, 4, 3, 4)]
    fine, coarse = level_masks(mask, feats)
    assert fine.dtype == torch.bool and torch.equal(fine, mask.bool())
    assert coarse.shape == (2, 3, 4) and valid_size(coarse).tolist() == [[4, 3], [3, 2]]


def test_flatten_levels_concatenates_tokens_with_sine_and_level_embedding():
    encoding = SinePositionalEncoding(num_feats=2, normalize=True)
    feats = [torch.randn(2, 4, 3, 4), torch.randn(2, 4, 2, 2)]
    level_embed = torch.randn(2, 4)
    flat = flatten_levels(feats, None, encoding, level_embed)
    assert flat.feat.shape == flat.pos.shape == (2, 16, 4) and flat.mask is None
    torch.testing.assert_close(flat.feat[:, 12:], feats[1].flatten(2).transpose(1, 2))
    sine = encoding(None, input=feats[1]).flatten(2).transpose(1, 2)
    torch.testing.assert_close(flat.pos[:, 12:], sine + level_embed[1])
    # Unpadded masks give the encoding of a full image.
    masks = [torch.zeros(2, 3, 4, dtype=torch.bool), torch.zeros(2, 2, 2, dtype=torch.bool)]
    masked = flatten_levels(feats, masks, encoding, level_embed)
    assert torch.equal(masked.pos, flat.pos) and masked.mask.shape == (2, 16)
    half = flatten_levels(feats, masks, encoding, level_embed.half(), pos_dtype=torch.half)
    assert half.pos.dtype == torch.half

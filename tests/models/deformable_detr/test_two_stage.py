import math

import pytest
import torch

from mmdet_ddetr.models.deformable_detr import DDETRProposalGenerator


def _generator(**kwargs):
    gen = DDETRProposalGenerator(embed_dims=16, num_queries=5, **kwargs)
    gen.init_weights()
    return gen


def test_proposal_size_doubles_per_level_and_centres_are_pixel_centres():
    gen = _generator()
    shapes = [(4, 4), (2, 2)]
    memory = torch.randn(1, 20, 16)
    _, proposals = gen.proposals(memory, None, shapes)
    boxes = proposals.sigmoid()
    finite = torch.isfinite(proposals).all(-1)[0]
    # level 0, pixel (1, 1): centre 1.5/4, size 0.05
    torch.testing.assert_close(boxes[0, 5], torch.tensor([0.375, 0.375, 0.05, 0.05]))
    # level 1 proposals are 0.1 wide
    torch.testing.assert_close(boxes[0, 16, 2:], torch.tensor([0.1, 0.1]))
    assert finite.all()


def test_padded_and_out_of_range_proposals_are_unusable():
    gen = _generator()
    mask = torch.zeros(1, 4, 8, dtype=torch.bool)
    mask[:, :, 6:] = True  # last 2 columns padded
    memory = torch.randn(1, 32, 16)
    out_memory, proposals = gen.proposals(memory, mask.flatten(1), [(4, 8)])
    proposals = proposals.view(1, 4, 8, 4)
    assert torch.isinf(proposals[0, :, 6:]).all()
    assert torch.isfinite(proposals[0, :, :6]).all()
    # masked tokens are zeroed before the projection: identical features
    rows = out_memory.view(1, 4, 8, 16)[0, :, 6:].reshape(-1, 16)
    assert torch.allclose(rows, rows[:1].expand_as(rows))


def test_large_proposals_near_border_are_invalid():
    gen = _generator(base_size=0.5)
    _, proposals = gen.proposals(torch.randn(1, 4, 16), None, [(2, 2)])
    # a 0.5 box centred at 0.25 is valid, but level 0 centres (0.25/0.75) +-; all coords must
    # lie in (0.01, 0.99): the size 0.5 does -> all valid
    assert torch.isfinite(proposals).all()
    gen = _generator(base_size=0.995)
    _, proposals = gen.proposals(torch.randn(1, 4, 16), None, [(2, 2)])
    assert torch.isinf(proposals).all()


def test_objectness_topk_selects_highest_scores_and_detaches():
    gen = _generator()
    scores = torch.randn(2, 20, 1)
    coords = torch.randn(2, 20, 4, requires_grad=True)
    idx, selected = gen.select(scores, coords)
    assert torch.equal(idx, scores[..., 0].topk(5, dim=1)[1])
    assert not selected.requires_grad
    torch.testing.assert_close(selected[1], coords[1, idx[1]].detach())


def test_topk_larger_than_tokens_is_a_clear_error():
    gen = _generator()
    with pytest.raises(ValueError, match='only 3 tokens'):
        gen.select(torch.randn(1, 3, 1), torch.randn(1, 3, 4))


def test_unknown_scoring_is_rejected():
    with pytest.raises(ValueError, match='scoring'):
        DDETRProposalGenerator(scoring='best')


def test_box_sine_embedding_layout():
    gen = _generator()
    coords = torch.logit(torch.tensor([[[0.25, 0.5, 0.1, 0.9]]]))
    emb = gen.box_sine_embedding(coords)
    assert emb.shape == (1, 1, 32)
    # first (sin, cos) pair of the cx block uses dim_t = 1
    x = 0.25 * 2 * math.pi
    torch.testing.assert_close(emb[0, 0, :2], torch.tensor([math.sin(x), math.cos(x)]))
    # the cy block starts at 8 = embed_dims / 2
    y = 0.5 * 2 * math.pi
    torch.testing.assert_close(emb[0, 0, 8:10], torch.tensor([math.sin(y), math.cos(y)]))

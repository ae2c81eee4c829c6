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


def _old_layout(state_dict, num_layers):
    """The state dict as written before the proposal branches moved to the generator."""
    old = {}
    for key, value in state_dict.items():
        for kind in ('cls', 'reg'):
            moved = f'proposal_generator.{kind}_branch.'
            if key.startswith(moved):
                key = f'bbox_head.{kind}_branches.{num_layers}.' + key[len(moved):]
        old[key] = value.clone()
    return old


@pytest.mark.parametrize('variant', [dict(with_box_refine=True),
                                     dict(scoring='class0')], ids=['refine', 'shared-class0'])
@pytest.mark.parametrize('loader', ['torch', 'mmengine'])
def test_checkpoint_of_the_old_layout_loads_and_predicts_the_same(variant, loader):
    from mmengine.runner.checkpoint import load_state_dict
    from tests.conftest import build_model, make_batch, small_ddetr_cfg
    cfg = small_ddetr_cfg(num_levels=2, as_two_stage=True, **variant)
    model = build_model(cfg).eval()
    for p in model.parameters():  # the zero-initialised branches must matter
        p.data.add_(torch.randn_like(p) * 0.02)
    old = _old_layout(model.state_dict(), model.decoder.num_layers)
    assert not any(k.startswith('proposal_generator.cls_branch') for k in old)
    torch.manual_seed(1)
    fresh = build_model(cfg).eval()
    if loader == 'torch':
        fresh.load_state_dict(old)
    else:
        load_state_dict(fresh, old, strict=True)
    data = model.data_preprocessor(make_batch([(64, 80), (48, 64)]))
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        want = model.forward_transformer(feats, data['data_samples'])
        got = fresh.forward_transformer(fresh.extract_feat(data['inputs']),
                                        data['data_samples'])
        want_out = model.bbox_head(want['hidden_states'], want['references'])
        got_out = fresh.bbox_head(got['hidden_states'], got['references'])
    for a, b in zip(want_out, got_out):
        assert torch.equal(a, b)
    # The encoder-proposal scores and boxes of the encoder loss (eval mode: no dropout).
    with torch.no_grad():
        enc_in = model.pre_transformer(feats, data['data_samples'])[0]
        memory = model.forward_encoder(**enc_in)
        want = model.proposal_generator(memory['memory'], memory['memory_mask'],
                                        memory['spatial_shape_list'])
        got = fresh.proposal_generator(memory['memory'], memory['memory_mask'],
                                       memory['spatial_shape_list'])
    for key in ('enc_outputs_class', 'enc_outputs_coord'):
        assert torch.equal(want[key], got[key])

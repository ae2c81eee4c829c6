import copy

import pytest
import torch

from tests.conftest import build_model, make_batch, small_ddetr_cfg

VARIANTS = {
    'single-scale': dict(num_levels=1),
    'multi-scale': dict(num_levels=4),
    'refine': dict(num_levels=4, with_box_refine=True),
    'refine-twostage': dict(num_levels=4, with_box_refine=True, as_two_stage=True),
    'twostage-class0': dict(num_levels=2, as_two_stage=True, scoring='class0'),
}


@pytest.mark.parametrize('variant', list(VARIANTS))
def test_variant_trains_and_predicts(variant):
    model = build_model(small_ddetr_cfg(**VARIANTS[variant]))
    batch = make_batch([(64, 80), (48, 64)], boxes_per_image=[3, 1])
    data = model.data_preprocessor(batch, training=True)
    model.train()
    losses = model(**data, mode='loss')
    two_stage = VARIANTS[variant].get('as_two_stage', False)
    assert ('enc_loss_cls' in losses) == two_stage
    assert {'loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls'} <= set(losses)
    total = sum(v for v in losses.values())
    assert torch.isfinite(total)
    total.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)

    model.eval()
    with torch.no_grad():
        results = model(**model.data_preprocessor(batch), mode='predict')
    for sample in results:
        pred = sample.pred_instances
        assert pred.bboxes.shape == (30, 4)  # 10 queries x 3 classes, top-100 clamped
        h, w = sample.img_shape
        assert (pred.bboxes[:, 0::2] <= w).all() and (pred.bboxes[:, 1::2] <= h).all()


def test_single_image_without_objects_gives_finite_losses():
    model = build_model(small_ddetr_cfg(with_box_refine=True, as_two_stage=True))
    batch = make_batch([(64, 64)], boxes_per_image=[0])
    losses = model(**model.data_preprocessor(batch, training=True), mode='loss')
    assert losses['loss_cls'] > 0
    assert losses['loss_bbox'] == 0 and losses['loss_iou'] == 0
    assert all(torch.isfinite(v) for v in losses.values())


def test_padding_does_not_change_predictions():
    """An image padded into a larger batch predicts what it predicts alone."""
    model = build_model(small_ddetr_cfg(num_levels=4, with_box_refine=True,
                                        as_two_stage=True)).eval()
    alone = make_batch([(64, 64)])
    batched = make_batch([(64, 64), (96, 128)])
    batched['inputs'][0] = 0
    batched['inputs'][0, :, :64, :64] = alone['inputs'][0]
    with torch.no_grad():
        ref = model(**model.data_preprocessor(alone), mode='predict')[0].pred_instances
        out = model(**model.data_preprocessor(batched), mode='predict')[0].pred_instances
    # The backbone sees zero padding (convs near the border differ), so compare loosely: the
    # transformer itself is padding-aware (masks, valid ratios).
    assert out.bboxes.shape == ref.bboxes.shape


def test_refinement_detaches_references_between_layers():
    model = build_model(small_ddetr_cfg(with_box_refine=True))
    for branch in model.bbox_head.reg_branches:  # zero-initialised: make layer 0 move boxes
        branch[-1].weight.data.normal_(std=0.1)
    batch = make_batch([(64, 64)])
    data = model.data_preprocessor(batch, training=True)
    feats = model.extract_feat(data['inputs'])
    head_inputs = model.forward_transformer(feats, data['data_samples'])
    refs = head_inputs['references']
    assert refs[0].shape[-1] == 2 and refs[1].shape[-1] == 4
    assert all(not r.requires_grad for r in refs[1:])
    # refined references differ from the initial ones (layer 0 moved them)
    assert not torch.allclose(refs[1][..., :2], refs[0])


def test_without_refinement_references_stay_the_initial_points():
    model = build_model(small_ddetr_cfg())
    data = model.data_preprocessor(make_batch([(64, 64)]), training=True)
    head_inputs = model.forward_transformer(model.extract_feat(data['inputs']),
                                            data['data_samples'])
    for ref in head_inputs['references'][1:]:
        assert torch.equal(ref, head_inputs['references'][0])


def test_objectness_branch_is_one_channel_and_separate():
    model = build_model(small_ddetr_cfg(as_two_stage=True))  # shared decoder branches
    head, proposals = model.bbox_head, model.proposal_generator
    assert len(head.cls_branches) == len(head.reg_branches) == model.decoder.num_layers
    assert proposals.cls_branch.out_features == 1
    assert head.cls_branches[0] is head.cls_branches[1]
    assert proposals.cls_branch is not head.cls_branches[0]
    # Official layout without refinement: the encoder's branches are the decoder's.
    official = build_model(small_ddetr_cfg(as_two_stage=True, scoring='class0'))
    assert official.proposal_generator.cls_branch.out_features == 3
    assert official.proposal_generator.cls_branch is official.bbox_head.cls_branches[0]
    assert official.proposal_generator.reg_branch is official.bbox_head.reg_branches[0]
    refine = build_model(small_ddetr_cfg(as_two_stage=True, with_box_refine=True,
                                         scoring='class0'))
    assert refine.proposal_generator.cls_branch is not refine.bbox_head.cls_branches[0]


@pytest.mark.parametrize('change,message', [
    (lambda c: c['neck'].update(num_outs=3), 'neck gives 3 feature maps'),
    (lambda c: c['encoder']['layer_cfg']['self_attn_cfg'].update(num_levels=2),
     'num_levels=2'),
    (lambda c: c['encoder']['layer_cfg']['self_attn_cfg'].update(num_heads=5),
     'divisible by num_heads'),
    (lambda c: c['decoder']['layer_cfg'].update(type='NoSuchLayer'), 'NoSuchLayer'),
    (lambda c: c['positional_encoding'].update(num_feats=8), 'half of embed_dims'),
    (lambda c: c['bbox_head'].update(as_two_stage=True), 'derived from the detector'),
    (lambda c: c['proposal_generator'].update(scoring='nope'), 'scoring'),
])
def test_config_errors_are_clear_and_early(change, message):
    cfg = small_ddetr_cfg(as_two_stage=True)
    change(cfg)
    with pytest.raises(Exception, match=message):
        build_model(cfg)


def test_two_stage_topk_larger_than_tokens_fails_with_fix():
    cfg = small_ddetr_cfg(num_levels=1, as_two_stage=True, num_queries=50)
    model = build_model(cfg)
    data = model.data_preprocessor(make_batch([(64, 64)]), training=True)  # 2x2 tokens
    with pytest.raises(ValueError, match='lower num_queries'):
        model(**data, mode='loss')


def test_tiny_and_extreme_aspect_images():
    model = build_model(small_ddetr_cfg(with_box_refine=True)).eval()
    for sizes in ([(24, 24)], [(64, 1600)], [(1600, 64), (24, 24)]):
        batch = make_batch(sizes, boxes_per_image=[1] * len(sizes))
        with torch.no_grad():
            results = model(**model.data_preprocessor(batch), mode='predict')
        assert all(torch.isfinite(r.pred_instances.bboxes).all() for r in results)
        model.train()
        losses = model(**model.data_preprocessor(batch, training=True), mode='loss')
        assert all(torch.isfinite(v) for v in losses.values())
        model.eval()


def test_degenerate_and_outside_boxes_give_finite_losses():
    model = build_model(small_ddetr_cfg())
    batch = make_batch([(64, 64)], boxes_per_image=[3])
    batch['data_samples'][0].gt_instances.bboxes = torch.tensor(
        [[10., 10., 10., 10.],      # zero area
         [50., 50., 90., 90.],      # partly outside
         [70., 70., 80., 80.]])     # wholly outside
    losses = model(**model.data_preprocessor(copy.deepcopy(batch), training=True), mode='loss')
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize('variant', ['multi-scale', 'refine-twostage'])
def test_tensor_mode_returns_raw_head_outputs(variant):
    """mode='tensor' (used by mmdet's get_flops and by export) gives per-layer outputs."""
    model = build_model(small_ddetr_cfg(**VARIANTS[variant])).eval()
    data = model.data_preprocessor(make_batch([(64, 80)]))
    with torch.no_grad():
        cls, boxes = model(**data, mode='tensor')
    assert cls.shape == (2, 1, 10, 3) and boxes.shape == (2, 1, 10, 4)

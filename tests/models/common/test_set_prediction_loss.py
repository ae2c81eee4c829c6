"""The loss and post-processing maths both heads share (SetPredictionLossMixin), checked on
DDETRHead and SMCAHead as the shipped configs build them."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import InstanceData

from mmdet.models.dense_heads import DETRHead
from mmdet.registry import MODELS
from mmdet_ddetr.models.common import set_prediction_loss
from tests.conftest import REPO, build_model, make_batch
from tests.models.smca_detr.common import small_smca_cfg

NUM_CLASSES, DIMS, QUERIES = 3, 16, 7
EPS32 = torch.finfo(torch.float32).eps  # mmdet's mean reduction divides by avg_factor + EPS32
BASES = {
    'DDETRHead': REPO / 'configs/_base_/models/deformable-detr_r50.py',
    'SMCAHead': REPO / 'configs/_base_/models/smca-detr_r50.py',
}


def build_head(name: str, **test_cfg):
    model = Config.fromfile(str(BASES[name])).model.to_dict()
    cfg = copy.deepcopy(model['bbox_head'])
    cfg.update(num_classes=NUM_CLASSES, embed_dims=DIMS, train_cfg=model['train_cfg'],
               test_cfg=dict(model['test_cfg'], **test_cfg))
    if name == 'DDETRHead':
        cfg.update(num_pred_layer=2, share_pred_layer=True, as_two_stage=False)
    torch.manual_seed(0)
    head = MODELS.build(cfg).double()
    head.init_weights()
    return head


def targets(num_boxes, h=60, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num_boxes, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
    wh = (torch.rand(num_boxes, 2, generator=g) * 0.3 + 0.1) * torch.tensor([w, h])
    gt = InstanceData(bboxes=torch.cat([xy, xy + wh], 1).double(),
                      labels=torch.randint(0, NUM_CLASSES, (num_boxes, ), generator=g))
    return gt, dict(img_shape=(h, w), scale_factor=(2.0, 0.5))


def predictions(head, bs=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    cls = torch.randn(bs, QUERIES, head.cls_out_channels, generator=g, dtype=torch.float64)
    boxes = torch.rand(bs, QUERIES, 4, generator=g, dtype=torch.float64) * 0.5 + 0.2
    return cls, boxes


@pytest.mark.parametrize('name', sorted(BASES))
@pytest.mark.parametrize('boxes_per_image', [(3, 2), (0, 2), (0, 0)])
def test_losses_are_mmdet_losses_divided_exactly(name, boxes_per_image):
    """Same targets and normalisers as mmdet's DETRHead, without its ``+ eps`` in the
    division (float64: only that bias separates the two); no ground truth in an image, or
    in the whole batch, gives finite losses."""
    head = build_head(name)
    gts, metas = zip(*(targets(n, seed=i) for i, n in enumerate(boxes_per_image)))
    cls, boxes = predictions(head)
    ours = head.loss_by_feat_single(cls, boxes, list(gts), list(metas))
    mmdet = DETRHead.loss_by_feat_single(head, cls, boxes, list(gts), list(metas))
    num_boxes = max(sum(boxes_per_image), 1)
    for our, theirs in zip(ours, mmdet):
        assert our.dim() == 0 and torch.isfinite(our)
        torch.testing.assert_close(our * num_boxes / (num_boxes + EPS32), theirs.reshape(()),
                                   rtol=1e-13, atol=0)
    loss_cls, loss_bbox, loss_iou = ours
    assert loss_cls > 0  # every unmatched query is pushed towards background
    if sum(boxes_per_image) == 0:
        assert loss_bbox == 0 and loss_iou == 0
    else:
        assert loss_bbox > 0 and loss_iou > 0


@pytest.mark.parametrize('name', sorted(BASES))
def test_box_count_is_averaged_over_processes_only_when_distributed(name, monkeypatch):
    head = build_head(name)
    gts, metas = zip(*(targets(n, seed=i) for i, n in enumerate((3, 1))))
    cls, boxes = predictions(head)

    def no_reduce(tensor):
        raise AssertionError('reduce_mean called outside distributed training')

    monkeypatch.setattr(set_prediction_loss, 'reduce_mean', no_reduce)
    local = head.loss_by_feat_single(cls, boxes, list(gts), list(metas))

    # Two processes; the other one has 8 boxes: the mean box count is (4 + 8) / 2 = 6.
    monkeypatch.setattr(set_prediction_loss, 'is_distributed', lambda: True)
    monkeypatch.setattr(set_prediction_loss, 'reduce_mean', lambda t: (t + 8) / 2)
    monkeypatch.setattr(torch.Tensor, 'item', no_reduce)  # no host sync in the loss
    dist = head.loss_by_feat_single(cls, boxes, list(gts), list(metas))
    monkeypatch.undo()
    for our_dist, our_local in zip(dist[1:], local[1:]):
        assert our_dist.dim() == 0
        torch.testing.assert_close(our_dist * 6, our_local * 4, rtol=1e-13, atol=0)
    # sync_cls_avg_factor=True in both configs: the classification normaliser too.
    torch.testing.assert_close(dist[0] * 6, local[0] * 4, rtol=1e-13, atol=0)


@pytest.mark.parametrize('name', sorted(BASES))
def test_predictions_are_topk_query_class_pairs(name):
    head = build_head(name, max_per_img=4)
    cls = torch.full((QUERIES, head.cls_out_channels), -10.0, dtype=torch.float64)
    cls[5, 2], cls[1, 0], cls[1, 1] = 3.0, 2.0, 1.0  # query 1 counts twice (two classes)
    boxes = torch.tensor([[0.5, 0.5, 0.2, 0.4]], dtype=torch.float64).repeat(QUERIES, 1)
    boxes[5] = torch.tensor([0.95, 0.5, 0.2, 0.2])  # crosses the right border
    _, meta = targets(0)
    res = head._predict_by_feat_single(cls, boxes, meta, rescale=False)
    assert res.labels[:3].tolist() == [2, 0, 1]
    torch.testing.assert_close(res.scores[:3], torch.tensor([3.0, 2.0, 1.0]).double().sigmoid())
    assert len(res) == 4
    # pixel xyxy of the 60x80 image, clipped to it
    torch.testing.assert_close(res.bboxes[0], torch.tensor([68.0, 24.0, 80.0, 36.0]).double())
    torch.testing.assert_close(res.bboxes[1], torch.tensor([32.0, 18.0, 48.0, 42.0]).double())
    rescaled = head._predict_by_feat_single(cls, boxes, meta, rescale=True)
    torch.testing.assert_close(rescaled.bboxes[1], torch.tensor([16.0, 36.0, 24.0, 84.0]).double())

    unclipped = build_head(name, max_per_img=4, clip_boxes=False)
    got = unclipped._predict_by_feat_single(cls, boxes, meta, rescale=False).bboxes[0]
    torch.testing.assert_close(got, torch.tensor([68.0, 24.0, 84.0, 36.0]).double())
    with pytest.raises(ValueError, match='scale_factor'):
        head._predict_by_feat_single(cls, boxes, dict(img_shape=(60, 80)), rescale=True)


def test_smca_no_object_slot_is_ranked_only_on_request():
    cls = torch.full((QUERIES, NUM_CLASSES + 1), -10.0, dtype=torch.float64)
    cls[0, NUM_CLASSES] = 5.0  # the no-object slot is the highest logit
    boxes = torch.full((QUERIES, 4), 0.5, dtype=torch.float64)
    _, meta = targets(0)
    default = build_head('SMCAHead', max_per_img=3)._predict_by_feat_single(
        cls, boxes, meta, rescale=False)
    assert (default.labels < NUM_CLASSES).all() and default.scores.max() < 0.5
    kept = build_head('SMCAHead', max_per_img=3, keep_no_object=True)._predict_by_feat_single(
        cls, boxes, meta, rescale=False)
    assert kept.labels[0] == NUM_CLASSES and kept.scores[0] > 0.99



@pytest.mark.parametrize('name', sorted(BASES))
def test_quality_focal_loss_is_refused_with_the_supported_losses(name):
    """DETRHead scores QualityFocalLoss targets by IoU in a branch of the loss this mixin
    replaces: without the refusal the head would build and train on plain-label targets."""
    cfg = Config.fromfile(str(BASES[name])).model.to_dict()['bbox_head']
    cfg.update(num_classes=NUM_CLASSES, embed_dims=DIMS,
               loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0))
    if name == 'DDETRHead':
        cfg.update(num_pred_layer=2, share_pred_layer=True, as_two_stage=False)
    with pytest.raises(ValueError, match="QualityFocalLoss.*'FocalLoss'.*'CrossEntropyLoss'"):
        MODELS.build(cfg)


@pytest.mark.parametrize('multi_scale', [False, True], ids=['smca', 'smca-ms'])
def test_smca_matching_and_losses_run_in_fp32_under_bf16_autocast(multi_scale):
    """The head's outputs are bfloat16 under autocast; the matching costs and the losses
    must see them in float32 (half-precision GIoU / cdist costs mis-match)."""
    model = build_model(small_smca_cfg(multi_scale=multi_scale))
    head = model.bbox_head
    seen = []
    for loss in (head.loss_cls, head.loss_bbox, head.loss_iou):
        loss.register_forward_pre_hook(
            lambda module, args: seen.append((type(module).__name__, args[0].dtype)))
    assign = head.assigner.assign

    def recording_assign(pred_instances, *args, **kwargs):
        seen.append(('assigner', pred_instances.scores.dtype))
        seen.append(('autocast', torch.is_autocast_enabled('cpu')))
        return assign(pred_instances, *args, **kwargs)

    head.assigner.assign = recording_assign
    data = model.data_preprocessor(make_batch([(64, 80), (48, 64)]), training=True)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        feats = model.extract_feat(data['inputs'])
        outs = model.forward_transformer(feats, data['data_samples'])
        assert head(**outs)[0].dtype == torch.bfloat16  # what the loss is given
        losses = head.loss(**outs, batch_data_samples=data['data_samples'])
    assert {name for name, _ in seen} == {'FocalLoss', 'L1Loss', 'GIoULoss', 'assigner',
                                          'autocast'}
    assert all(value in (torch.float32, False) for _, value in seen), sorted(set(seen))
    assert all(v.dtype == torch.float32 for v in losses.values())

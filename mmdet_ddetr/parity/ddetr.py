"""Parity of :class:`mmdet_ddetr.models.DDETR` with the official Deformable DETR.

A fixture (see ``tests/data/official/FORMAT.md``) stores the official hyper-parameters,
weights, backbone features, masks, outputs, losses, Hungarian matchings and post-processed
detections of a float64 run. :func:`check` rebuilds the model from the hyper-parameters,
converts the weights, feeds the stored features to the neck (the backbone is bypassed), and
returns the max abs difference of every stored quantity.
"""
from typing import Any, Dict

import torch
from torch import Tensor, nn

from ..converters.ddetr import official_to_ours
from .common import data_samples, hungarian_matching, load_converted, max_diff, to_device

# mmdet loss names -> official names (final layer); aux layers add "d{i}." / "_{i}".
_LOSS_NAMES = {'loss_cls': 'loss_ce', 'loss_bbox': 'loss_bbox', 'loss_iou': 'loss_giou'}


class _FeaturesGiven(nn.Module):
    """Backbone placeholder: the fixture provides the backbone features."""

    def forward(self, x: Tensor):
        raise RuntimeError('parity runs feed stored features to the neck directly')


def model_config(meta: Dict[str, Any]) -> Dict[str, Any]:
    """DDETR config equivalent to the official model described by ``meta``."""
    args = meta['args']
    dims, heads = args['hidden_dim'], args['nheads']
    levels = args['num_feature_levels']
    channels = list(meta['backbone_num_channels'])
    ffn = dict(embed_dims=dims, feedforward_channels=args['dim_feedforward'],
               ffn_drop=args['dropout'])

    def msda(points: int) -> Dict[str, Any]:
        return dict(embed_dims=dims, num_heads=heads, num_levels=levels, num_points=points,
                    dropout=args['dropout'], batch_first=True)

    return dict(
        type='DDETR',
        num_queries=args['num_queries'],
        num_feature_levels=levels,
        with_box_refine=args['with_box_refine'],
        as_two_stage=args['two_stage'],
        backbone=dict(type=_FeaturesGiven),
        neck=dict(type='ChannelMapper', in_channels=channels, kernel_size=1, out_channels=dims,
                  bias=True, act_cfg=None, norm_cfg=dict(type='GN', num_groups=32),
                  num_outs=levels),
        encoder=dict(num_layers=args['enc_layers'],
                     layer_cfg=dict(self_attn_cfg=msda(args['enc_n_points']), ffn_cfg=ffn)),
        decoder=dict(num_layers=args['dec_layers'], return_intermediate=True,
                     layer_cfg=dict(self_attn_cfg=dict(embed_dims=dims, num_heads=heads,
                                                       dropout=args['dropout'],
                                                       batch_first=True),
                                    cross_attn_cfg=msda(args['dec_n_points']), ffn_cfg=ffn)),
        positional_encoding=dict(num_feats=dims // 2, normalize=True, offset=-0.5),
        proposal_generator=dict(scoring='class0'),
        bbox_head=dict(
            type='DDETRHead', num_classes=meta['num_classes'], sync_cls_avg_factor=False,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0,
                          alpha=args['focal_alpha'], loss_weight=args['cls_loss_coef']),
            loss_bbox=dict(type='L1Loss', loss_weight=args['bbox_loss_coef']),
            loss_iou=dict(type='GIoULoss', loss_weight=args['giou_loss_coef'])),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=args['set_cost_class']),
            dict(type='BBoxL1Cost', weight=args['set_cost_bbox'], box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=args['set_cost_giou'])])),
        test_cfg=dict(max_per_img=meta.get('postprocess_topk', 100), clip_boxes=False))


def build_converted_model(fixture: Dict[str, Any]) -> nn.Module:
    """The fixture's model with its official weights, in float64 eval mode."""
    return load_converted(
        model_config(fixture['meta']),
        official_to_ours({k: v.double() for k, v in fixture['state_dict'].items()},
                         proposal_scoring='class0'))


def run_model(model: nn.Module, fixture: Dict[str, Any]) -> Dict[str, Any]:
    """Transformer stages + head outputs on the stored features."""
    feats = tuple(f.double() for f in fixture['inputs']['features'])
    # The detector hands the two-stage encoder outputs to the head only in training, as
    # mmdet's; raise the detector's own flag (every submodule stays in eval mode) to get them.
    model.training = True
    try:
        with torch.no_grad():
            img_feats = model.neck(feats)
            head_inputs = model.forward_transformer(img_feats, data_samples(fixture))
    finally:
        model.training = False
    with torch.no_grad():
        cls_scores, bbox_preds = model.bbox_head(head_inputs['hidden_states'],
                                                 head_inputs['references'])
    return dict(head_inputs=head_inputs, cls_scores=cls_scores, bbox_preds=bbox_preds)


def _compare_losses(model: nn.Module, run: Dict[str, Any], fixture: Dict[str, Any],
                    suffix: str) -> Dict[str, float]:
    targets = fixture['targets' + suffix]
    samples = data_samples(fixture, targets)
    head = model.bbox_head
    head_inputs = run['head_inputs']
    with torch.no_grad():
        losses = head.loss_by_feat(run['cls_scores'], run['bbox_preds'],
                                   head_inputs['enc_outputs_class'],
                                   head_inputs['enc_outputs_coord'],
                                   [s.gt_instances for s in samples],
                                   [s.metainfo for s in samples])
    weights = {'loss_cls': head.loss_cls.loss_weight, 'loss_bbox': head.loss_bbox.loss_weight,
               'loss_iou': head.loss_iou.loss_weight}
    official = fixture['losses' + suffix]
    diffs = {}
    for key, value in losses.items():
        prefix, _, base = key.rpartition('.')
        if base.startswith('enc_'):
            base, name_suffix = base[4:], '_enc'
        else:
            name_suffix = f'_{prefix[1:]}' if prefix else ''
        name = _LOSS_NAMES[base] + name_suffix
        diffs[f'losses{suffix}.{name}'] = abs(value.item() / weights[base] -
                                              official[name].item())
    missing = {k for k in official if k.startswith('loss_')} - {
        k.split('.', 1)[1] for k in diffs}
    for name in missing:
        diffs[f'losses{suffix}.{name} (not computed)'] = float('inf')

    # Hungarian assignments, final / aux / encoder, must be identical.
    stored = fixture['matching' + suffix]
    predictions = {'final': (run['cls_scores'][-1], run['bbox_preds'][-1])}
    for i in range(run['cls_scores'].shape[0] - 1):
        predictions[f'aux_{i}'] = (run['cls_scores'][i], run['bbox_preds'][i])
    if head_inputs['enc_outputs_class'] is not None:
        predictions['enc'] = (head_inputs['enc_outputs_class'], head_inputs['enc_outputs_coord'])
    enc_samples = data_samples(fixture, targets)
    for s in enc_samples:  # the encoder is matched class-agnostically
        s.gt_instances.labels = torch.zeros_like(s.gt_instances.labels)
    for name, (cls, box) in predictions.items():
        ours = hungarian_matching(model, cls, box, enc_samples if name == 'enc' else samples)
        theirs = [(q.tolist(), t.tolist()) for q, t in stored[name]]
        theirs = [tuple(map(list, zip(*sorted(zip(q, t))))) if q else ([], [])
                  for q, t in theirs]
        diffs[f'matching{suffix}.{name}'] = 0.0 if ours == theirs else float('inf')
    return diffs


def check(fixture: Dict[str, Any], device: str = 'cpu') -> Dict[str, float]:
    """Max abs difference of every stored output, loss and detection (inf = mismatch).

    ``device='cuda'`` runs the same float64 check on the GPU (mmcv's CUDA kernel for the
    deformable attention, which dispatches double).
    """
    fixture = to_device(fixture, device)
    model = build_converted_model(fixture).to(device)
    run = run_model(model, fixture)
    outputs = fixture['outputs']
    cls_scores, bbox_preds = run['cls_scores'], run['bbox_preds']
    head_inputs = run['head_inputs']
    diffs = {
        'pred_logits': max_diff(cls_scores[-1], outputs['pred_logits']),
        'pred_boxes': max_diff(bbox_preds[-1], outputs['pred_boxes']),
        'init_reference': max_diff(head_inputs['references'][0], outputs['init_reference']),
        'inter_references': max_diff(torch.stack(head_inputs['references'][1:]),
                                      outputs['inter_references']),
        'hs_ch0to15': max_diff(head_inputs['hidden_states'][..., :16],
                                fixture['debug']['hs_ch0to15']),
    }
    for i, aux in enumerate(outputs['aux_outputs']):
        diffs[f'aux_outputs.{i}.pred_logits'] = max_diff(cls_scores[i], aux['pred_logits'])
        diffs[f'aux_outputs.{i}.pred_boxes'] = max_diff(bbox_preds[i], aux['pred_boxes'])
    if 'enc_outputs' in outputs:
        enc_cls = head_inputs['enc_outputs_class']
        diffs['enc_outputs.pred_logits'] = max_diff(enc_cls, outputs['enc_outputs']['pred_logits'])
        diffs['enc_outputs.pred_boxes'] = max_diff(head_inputs['enc_outputs_coord'],
                                                    outputs['enc_outputs']['pred_boxes'])
        topk = torch.topk(enc_cls[..., 0], model.num_queries, dim=1)[1]
        diffs['enc_topk_proposals'] = (
            0.0 if torch.equal(topk, outputs['enc_topk_proposals']) else float('inf'))

    for suffix in ('', '_alt'):
        diffs.update(_compare_losses(model, run, fixture, suffix))

    results = model.bbox_head.predict_by_feat(cls_scores, bbox_preds,
                                              [s.metainfo for s in data_samples(fixture)],
                                              rescale=True)
    for i, (ours, theirs) in enumerate(zip(results, fixture['postprocess']['results'])):
        diffs[f'postprocess.{i}.scores'] = max_diff(ours.scores, theirs['scores'])
        diffs[f'postprocess.{i}.labels'] = max_diff(ours.labels, theirs['labels'])
        diffs[f'postprocess.{i}.boxes'] = max_diff(ours.bboxes, theirs['boxes'])
    return diffs

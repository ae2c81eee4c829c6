"""Parity of :class:`mmdet_ddetr.models.smca_detr.SMCADETR` with the official single-scale
SMCA-DETR.

An SMCA fixture (``smca_*.pt``, format in ``tests/data/official/FORMAT.md``; fixture
``meta['family'] == 'smca_detr_single_scale'``) stores the official hyper-parameters, weights,
C5 features, masks, outputs, losses, Hungarian matchings and post-processed detections of a
float64 run. :func:`check` rebuilds our model from the hyper-parameters, converts the weights
with the checkpoint converter, feeds the stored features to the neck (the backbone is
bypassed) and returns the max abs difference of every stored quantity (``inf`` = mismatch of
a discrete result: matching, shapes). On ``smca_single_scale.pt`` every difference is
<= ~2e-13 (boxes in pixels), losses are equal to the last bit.
"""
from typing import Any, Dict, List

import torch
from torch import Tensor, nn


from ..converters.smca import convert_smca_official_state_dict
from .common import data_samples, hungarian_matching, load_converted, max_diff, to_device
from ..models.smca_detr.gaussian_prior import OFFICIAL_SCALE_TYPES, SMCAGaussianPrior

# Value of fixture['meta']['family'] for SMCA fixtures.
FAMILY = 'smca_detr_single_scale'
# mmdet loss names -> official names (final layer); aux layers are "d{i}.x" -> "x_{i}".
_LOSS_NAMES = {'loss_cls': 'loss_ce', 'loss_bbox': 'loss_bbox', 'loss_iou': 'loss_giou'}
# The official build() hard-codes the classification loss weight.
_OFFICIAL_CLS_WEIGHT = 2.0


class _FeaturesGiven(nn.Module):
    """Backbone placeholder: the fixture provides the backbone (C5) features."""

    def forward(self, x: Tensor):
        raise RuntimeError('parity runs feed the stored features to the neck directly')


def model_config(meta: Dict[str, Any]) -> Dict[str, Any]:
    """SMCADETR config equivalent to the official model described by ``meta``.

    Raises:
        NotImplementedError: for official options our model does not implement (pre-norm:
            the official pre-norm path does not even apply the Gaussian).
    """
    args = meta['args']
    if args.get('pre_norm', False):
        raise NotImplementedError('official pre_norm=True SMCA (no Gaussian in forward_pre) '
                                  'is not implemented')
    dims, heads, drop = args['hidden_dim'], args['nheads'], args['dropout']
    attn = dict(embed_dims=dims, num_heads=heads, dropout=drop, batch_first=True)
    ffn = dict(embed_dims=dims, feedforward_channels=args['dim_feedforward'], num_fcs=2,
               ffn_drop=drop, act_cfg=dict(type='ReLU', inplace=True))
    scale_type = OFFICIAL_SCALE_TYPES[meta.get('dynamic_scale', args['dynamic_scale'])]
    return dict(
        type='SMCADETR',
        num_queries=args['num_queries'],
        backbone=dict(type=_FeaturesGiven),
        neck=dict(type='ChannelMapper', in_channels=list(meta['backbone_num_channels']),
                  kernel_size=1, out_channels=dims, act_cfg=None, norm_cfg=None, num_outs=1),
        encoder=dict(num_layers=args['enc_layers'],
                     layer_cfg=dict(self_attn_cfg=attn, ffn_cfg=ffn)),
        decoder=dict(
            num_layers=args['dec_layers'], return_intermediate=True,
            # The official centre is sigmoid(point1) * (w, h) / 32, whatever the stride.
            feat_stride='official',
            layer_cfg=dict(self_attn_cfg=attn, cross_attn_cfg=attn, ffn_cfg=ffn,
                           gaussian_prior_cfg=dict(scale_type=scale_type,
                                                   smooth=meta.get('smooth', args['smooth'])))),
        positional_encoding=dict(num_feats=dims // 2, normalize=True),
        bbox_head=dict(
            type='SMCAHead', num_classes=meta['num_classes'], embed_dims=dims,
            with_no_object_logit=True,
            loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
                          loss_weight=_OFFICIAL_CLS_WEIGHT),
            loss_bbox=dict(type='L1Loss', loss_weight=args['bbox_loss_coef']),
            loss_iou=dict(type='GIoULoss', loss_weight=args['giou_loss_coef'])),
        train_cfg=dict(assigner=dict(type='HungarianAssigner', match_costs=[
            dict(type='FocalLossCost', weight=args['set_cost_class'], eps=1e-8),
            dict(type='BBoxL1Cost', weight=args['set_cost_bbox'], box_format='xywh'),
            dict(type='IoUCost', iou_mode='giou', weight=args['set_cost_giou'])])),
        test_cfg=dict(max_per_img=meta.get('postprocess_topk', args['num_queries']),
                      clip_boxes=False, keep_no_object=True))


def build_converted_model(fixture: Dict[str, Any]) -> nn.Module:
    """The fixture's model with its converted official weights, float64, eval mode."""
    return load_converted(
        model_config(fixture['meta']),
        convert_smca_official_state_dict(
            {k: v.double() for k, v in fixture['state_dict'].items()}))


def run_model(model: nn.Module, fixture: Dict[str, Any]) -> Dict[str, Any]:
    """Every pipeline stage on the stored features, keeping the intermediate tensors."""
    feats = tuple(f.double() for f in fixture['inputs']['features'])
    priors: List[Tensor] = []
    hooks = [m.register_forward_hook(lambda _m, _i, out: priors.append(out))
             for m in model.decoder.modules() if isinstance(m, SMCAGaussianPrior)]
    try:
        with torch.no_grad():
            img_feats = model.neck(feats)
            samples = data_samples(fixture)
            enc_in, dec_in = model.pre_transformer(img_feats, samples)
            enc_out = model.forward_encoder(**enc_in)
            tmp_dec_in, head_inputs = model.pre_decoder(**enc_out)
            dec_in.update(tmp_dec_in)
            head_inputs.update(model.forward_decoder(**dec_in))
            cls_scores, bbox_preds = model.bbox_head(**head_inputs)
    finally:
        for h in hooks:
            h.remove()
    return dict(enc_in=enc_in, dec_in=dec_in, memory=enc_out['memory'], priors=priors,
                head_inputs=head_inputs, cls_scores=cls_scores, bbox_preds=bbox_preds)


def _compare_losses(model: nn.Module, run: Dict[str, Any], fixture: Dict[str, Any],
                    suffix: str) -> Dict[str, float]:
    """Unweighted losses (official names) and Hungarian matchings for one target set."""
    samples = data_samples(fixture, fixture['targets' + suffix])
    head = model.bbox_head
    with torch.no_grad():
        losses = head.loss_by_feat(run['cls_scores'], run['bbox_preds'],
                                   [s.gt_instances for s in samples],
                                   [s.metainfo for s in samples])
    weights = {'loss_cls': head.loss_cls.loss_weight, 'loss_bbox': head.loss_bbox.loss_weight,
               'loss_iou': head.loss_iou.loss_weight}
    official = fixture['losses' + suffix]
    aux_loss = fixture['meta'].get('args', {}).get('aux_loss', True)
    diffs = {}
    for key, value in losses.items():
        prefix, _, base = key.rpartition('.')
        if prefix and not aux_loss:
            continue  # official aux_loss=False: only the last layer is supervised
        name = _LOSS_NAMES[base] + (f'_{prefix[1:]}' if prefix else '')
        if name not in official:
            diffs[f'losses{suffix}.{name} (not in fixture)'] = float('inf')
            continue
        diffs[f'losses{suffix}.{name}'] = abs(value.item() / weights[base] -
                                              official[name].item())
    # class_error / cardinality_error are logging-only (not in weight_dict): not compared.
    for name in official:
        if name.startswith('loss_') and f'losses{suffix}.{name}' not in diffs:
            diffs[f'losses{suffix}.{name} (not computed)'] = float('inf')

    stored = fixture['matching' + suffix]
    cls_scores, bbox_preds = run['cls_scores'], run['bbox_preds']
    predictions = {'final': (cls_scores[-1], bbox_preds[-1])}
    for i in range(cls_scores.shape[0] - 1):
        predictions[f'aux_{i}'] = (cls_scores[i], bbox_preds[i])
    for name, (cls, box) in predictions.items():
        if name not in stored:
            continue
        ours = hungarian_matching(model, cls, box, samples)
        theirs = []
        for q, t in stored[name]:
            pairs = sorted(zip(q.tolist(), t.tolist()))
            theirs.append(([p[0] for p in pairs], [p[1] for p in pairs]))
        diffs[f'matching{suffix}.{name}'] = 0.0 if ours == theirs else float('inf')
    return diffs


def check(fixture: Dict[str, Any], device: str = 'cpu') -> Dict[str, float]:
    """Max abs difference of every stored output, loss and detection (inf = mismatch).

    ``device='cuda'`` runs the same float64 check on the GPU.

    Works for any hyper-parameters the fixture format expresses (dims, heads, layers, FFN,
    queries, classes, scale type1-4, smooth, C5 channels, image sizes, cost/loss weights).
    """
    fixture = to_device(fixture, device)
    model = build_converted_model(fixture).to(device)
    run = run_model(model, fixture)
    outputs, inputs, debug = fixture['outputs'], fixture['inputs'], fixture.get('debug', {})
    cls_scores, bbox_preds = run['cls_scores'], run['bbox_preds']
    references = run['head_inputs']['references']
    num_heads = model.decoder.layers[0].cross_attn.num_heads

    our_mask = run['enc_in']['feat_mask']
    their_mask = inputs['masks'][-1].flatten(1)
    diffs = {
        'masks': 0.0 if our_mask is not None and torch.equal(our_mask, their_mask) else
        float('inf') if their_mask.any() else 0.0,
        'pred_logits': max_diff(cls_scores[-1], outputs['pred_logits']),
        'pred_boxes': max_diff(bbox_preds[-1], outputs['pred_boxes']),
        'ref_point_logits': max_diff(references, outputs['ref_point_logits']),
    }
    img_wh = run['dec_in']['img_wh']
    centres = model.decoder.centres_in_cells(references.sigmoid() * img_wh[:, None, :],
                                             run['dec_in']['input_hw'],
                                             run['dec_in']['spatial_shape'])
    for i, grid in enumerate(outputs.get('ref_point_grid', [])):
        diffs[f'ref_point_grid.{i}'] = max_diff(centres.repeat(1, 1, num_heads), grid)
    for i, aux in enumerate(outputs.get('aux_outputs', [])):
        diffs[f'aux_outputs.{i}.pred_logits'] = max_diff(cls_scores[i], aux['pred_logits'])
        diffs[f'aux_outputs.{i}.pred_boxes'] = max_diff(bbox_preds[i], aux['pred_boxes'])
    if 'memory_ch0to7' in debug:
        diffs['debug.memory_ch0to7'] = max_diff(run['memory'][..., :8], debug['memory_ch0to7'])
    if 'hs_ch0to15' in debug:
        diffs['debug.hs_ch0to15'] = max_diff(run['head_inputs']['hidden_states'][..., :16],
                                              debug['hs_ch0to15'])
    for i, theirs in enumerate(debug.get('gaussian', [])):
        ours = run['priors'][i]  # (bs, heads, Q, HW) -> official (Q, HW, bs * heads)
        ours = ours.permute(2, 3, 0, 1).flatten(2)
        diffs[f'debug.gaussian.{i}'] = max_diff(ours, theirs)

    for suffix in ('', '_alt'):
        if 'targets' + suffix in fixture:
            diffs.update(_compare_losses(model, run, fixture, suffix))

    post = fixture['postprocess']
    results = model.bbox_head.predict_by_feat(cls_scores[-1:], bbox_preds[-1:],
                                              [s.metainfo for s in data_samples(fixture)],
                                              rescale=True)
    stored = post.get('results_sorted_by_score', post['results'])
    for i, (ours, theirs) in enumerate(zip(results, stored)):
        # Official top-k is unsorted; compare both sides stable-sorted by score.
        order = torch.sort(ours.scores, descending=True, stable=True)[1]
        diffs[f'postprocess.{i}.scores'] = max_diff(ours.scores[order], theirs['scores'])
        diffs[f'postprocess.{i}.labels'] = max_diff(ours.labels[order], theirs['labels'])
        diffs[f'postprocess.{i}.boxes'] = max_diff(ours.bboxes[order], theirs['boxes'])
    return diffs

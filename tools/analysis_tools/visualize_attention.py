"""Draw where a trained detector's attention looks (PNG files, matplotlib Agg).

Deformable DETR checkpoints (any model with :class:`MSDeformAttention`):

* ``decoder_sampling.png``: for the ``--topk`` highest-scoring queries, the reference point
  (green cross; dashed cyan box for box references) and the sampling points of every head in
  decoder layer ``--layer``, one panel per feature level plus one with all levels, coloured and
  sized by attention weight (Deformable DETR paper, Fig. 6 style).
* ``encoder_sampling.png``: for the encoder token of level ``--query-level`` that contains
  ``--pixel X Y`` (original-image pixels; default: centre of the best detection), its sampling
  points on every level in every encoder layer (one row per layer).

SMCA-DETR checkpoints:

* ``smca_attention.png``: for the ``--topk`` best queries, each head's Gaussian prior
  ``exp(log G)`` and its prior-modulated co-attention map in decoder layer ``--layer``
  (scale ``--smca-scale`` for multi-scale SMCA).

Recording never changes the model outputs (see mmdet_ddetr/analysis/attention.py and
tests/analysis_tools/test_visualize_attention.py).

Example::

    python tools/analysis_tools/visualize_attention.py \
        configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py \
        work_dirs/demo/epoch_12.pth --img data/synthetic/val/000000.png \
        --out-dir work_dirs/demo/attention --pixel 64 64
"""
import argparse
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

from mmdet_ddetr.utils.cli import (add_verbose_argument, non_negative_float, positive_int,
                                   quiet_init_log)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Draw deformable sampling points / SMCA Gaussian priors of a detector.')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--img', required=True, help='image file')
    parser.add_argument('--out-dir', default='work_dirs/attention',
                        help='folder for the PNG files (default work_dirs/attention)')
    parser.add_argument('--topk', type=positive_int, default=3,
                        help='number of best-scoring queries drawn (default 3)')
    parser.add_argument('--layer', type=int, default=-1,
                        help='decoder layer to draw, Python index (default -1: the last)')
    parser.add_argument('--pixel', type=non_negative_float, nargs=2, metavar=('X', 'Y'),
                        help='encoder query pixel in original-image coordinates '
                        '(default: centre of the best detection)')
    parser.add_argument('--query-level', type=int, default=0,
                        help='feature level of the encoder query token (default 0, finest)')
    parser.add_argument('--smca-scale', type=int, default=0,
                        help='scale drawn for multi-scale SMCA (default 0)')
    parser.add_argument('--device', default='cpu', help='device (default cpu)')
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint {args.checkpoint!r} does not exist')
    if not osp.isfile(args.img):
        parser.error(f'image {args.img!r} does not exist')
    if osp.exists(args.out_dir) and not osp.isdir(args.out_dir):
        parser.error(f'--out-dir {args.out_dir!r} exists and is not a folder')
    if args.query_level < 0 or args.smca_scale < 0:
        parser.error('--query-level and --smca-scale must be >= 0')
    return args


def prepare_inputs(model, img_path: str):
    """Run the config's test pipeline (without annotation loading) and the data
    preprocessor on one image.

    Returns:
        tuple: normalised batch (1, 3, H, W), data samples, and the unnormalised RGB uint8
        network input (H, W, 3) for drawing.
    """
    import numpy as np
    from mmcv.transforms import Compose

    from mmdet.utils import get_test_pipeline_cfg
    pipeline_cfg = [t for t in get_test_pipeline_cfg(model.cfg)
                    if 'LoadAnnotations' not in str(t.get('type', ''))]
    pipeline = Compose(pipeline_cfg)
    data = pipeline(dict(img_path=img_path, img_id=0))
    raw = data['inputs']  # (3, H, W) uint8, channel order as loaded (BGR)
    batch = model.data_preprocessor(dict(inputs=[raw], data_samples=[data['data_samples']]),
                                    False)
    inputs, samples = batch['inputs'], batch['data_samples']
    image = raw.permute(1, 2, 0).cpu().numpy()[..., ::-1]  # BGR -> RGB
    pad_h, pad_w = inputs.shape[-2:]
    canvas = np.zeros((pad_h, pad_w, 3), dtype=np.uint8)
    canvas[:image.shape[0], :image.shape[1]] = image
    return inputs, samples, canvas


def top_queries(cls_scores, bbox_preds, num_classes: int, img_shape: Tuple[int, int], k: int):
    """Best ``k`` queries of the last decoder layer by max sigmoid class score.

    Args:
        cls_scores: (num_layers, bs, Q, C') logits; only the first ``num_classes`` channels
            count (SMCA adds a never-positive no-object channel).
        bbox_preds: (num_layers, bs, Q, 4) normalised (cx, cy, w, h).
        img_shape: (H, W) the boxes are normalised by.

    Returns:
        list[dict]: ``query``, ``score``, ``label`` (index), ``box`` (x1, y1, x2, y2) pixels.
    """
    scores, labels = cls_scores[-1, 0, :, :num_classes].sigmoid().max(-1)
    k = min(k, scores.numel())
    best = scores.topk(k).indices.tolist()
    h, w = img_shape
    dets = []
    for q in best:
        cx, cy, bw, bh = bbox_preds[-1, 0, q].tolist()
        dets.append(dict(query=q, score=float(scores[q]), label=int(labels[q]),
                         box=[(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w,
                              (cy + bh / 2) * h]))
    return dets


def _class_name(model, label: int) -> str:
    classes = (getattr(model, 'dataset_meta', None) or {}).get('classes')
    return classes[label] if classes and label < len(classes) else str(label)


def _pick(items: list, index: int, what: str):
    if not -len(items) <= index < len(items):
        raise SystemExit(f'error: {what} {index} does not exist (the model has {len(items)})')
    return items[index]


def draw_ddetr(model, recorder, dets, image, args, sample, out_dir) -> List[str]:
    """Decoder and encoder sampling pictures of a Deformable DETR."""
    import numpy as np

    from mmdet_ddetr.analysis.attention import level_token_index
    from mmdet_ddetr.analysis.attention_plots import plot_sampling_grid
    pad_h, pad_w = image.shape[:2]
    scale = np.array([pad_w, pad_h], dtype=np.float64)
    written = []

    dec_names = [n for n in recorder.names('decoder') if recorder.records[n]]
    dec_name = _pick(dec_names, args.layer, 'decoder layer')
    rec = recorder.records[dec_name][0]
    num_levels = rec.sampling_locations.shape[3]
    level_names = [f'level {lvl} ({h}x{w})' for lvl, (h, w) in
                   enumerate(rec.spatial_shapes.tolist())]
    rows = []
    for det in dets:
        q = det['query']
        ref = rec.reference_points[0, q].double().cpu().numpy()
        row = dict(
            label=f'{_class_name(model, det["label"])} {det["score"]:.2f} (query {q})',
            box=det['box'],
            locations=rec.sampling_locations[0, q].double().cpu().numpy() * scale,
            weights=rec.attention_weights[0, q].double().cpu().numpy())
        if ref.shape[-1] == 4:  # box reference (refine / two-stage): centre + box
            row['reference'] = ref[:, :2] * scale
            row['reference_box'] = np.concatenate(
                [(ref[:, :2] - ref[:, 2:] / 2) * scale, (ref[:, :2] + ref[:, 2:] / 2) * scale],
                -1)
        else:
            row['reference'] = ref * scale
        rows.append(row)
    out = osp.join(out_dir, 'decoder_sampling.png')
    written.append(plot_sampling_grid(
        image, rows, level_names, out,
        f'Decoder {dec_name}: sampling points of the top-{len(dets)} queries '
        f'(colour/size = attention weight; + = reference point)'))

    enc_names = [n for n in recorder.names('encoder') if recorder.records[n]]
    if enc_names:
        if args.pixel is not None:
            sx, sy = sample.scale_factor
            px, py = args.pixel[0] * sx, args.pixel[1] * sy
        else:
            x1, y1, x2, y2 = dets[0]['box']
            px, py = (x1 + x2) / 2, (y1 + y2) / 2
        shapes = [tuple(s) for s in recorder.records[enc_names[0]][0].spatial_shapes.tolist()]
        if args.query_level >= len(shapes):
            raise SystemExit(f'error: --query-level {args.query_level} does not exist (the '
                             f'model has {len(shapes)} levels)')
        try:
            token = level_token_index(shapes, args.query_level, px, py, (pad_w, pad_h))
        except ValueError as e:
            raise SystemExit(f'error: --pixel: {e}')
        rows = []
        for name in enc_names:
            erec = recorder.records[name][0]
            rows.append(dict(
                label=name.replace('.self_attn', ''),
                locations=erec.sampling_locations[0, token].double().cpu().numpy() * scale,
                weights=erec.attention_weights[0, token].double().cpu().numpy(),
                reference=erec.reference_points[0, token].double().cpu().numpy() * scale))
        out = osp.join(out_dir, 'encoder_sampling.png')
        written.append(plot_sampling_grid(
            image, rows, level_names[:num_levels], out,
            f'Encoder: sampling points of the level-{args.query_level} token at input pixel '
            f'({px:.0f}, {py:.0f}), every layer (+ = reference point)'))
    return written


def draw_smca(model, recorder, dets, image, args, out_dir) -> List[str]:
    """Gaussian prior and modulated attention of an SMCA-DETR."""
    from mmdet_ddetr.analysis.attention_plots import plot_smca_maps
    layer = _pick(recorder.layers, args.layer, 'decoder layer')
    if not layer.log_priors:
        raise SystemExit('error: the SMCA decoder layer was not called')
    _pick(layer.log_priors, args.smca_scale, '--smca-scale')  # range check
    s = args.smca_scale
    log_prior, attn = layer.log_priors[s], layer.attn_weights[s]
    h, w = layer.spatial_shapes[s]
    import torch

    from mmdet_ddetr.models.smca_detr.base import resolve_stride
    setting = model.decoder.stride_settings()[s]
    # The canvas is the padded input: the stride of scale s as the model resolved it.
    input_hw = (int(image.shape[0]), int(image.shape[1]))
    stride = float(resolve_stride(setting, input_hw, (h, w), torch.zeros(())))
    # Cell index i is the official grid's coordinate for input pixel i * stride.
    extent = (-0.5 * stride, (w - 0.5) * stride, (h - 0.5) * stride, -0.5 * stride)
    rows = []
    for det in dets:
        q = det['query']
        prior = log_prior[0, :, q].double().exp().reshape(-1, h, w).cpu().numpy()
        amap = attn[0, :, q].double().reshape(-1, h, w).cpu().numpy()
        cx, cy = (layer.centres[s][0, q].double() * stride).tolist()
        rows.append(dict(label=f'{_class_name(model, det["label"])} {det["score"]:.2f} '
                         f'(query {q})', box=det['box'], prior=prior, attn=amap,
                         extent=extent, centre=(cx, cy)))
    out = osp.join(out_dir, 'smca_attention.png')
    n_layers = len(recorder.layers)
    layer_idx = args.layer % n_layers
    return [plot_smca_maps(image, rows, out,
                           f'SMCA decoder layer {layer_idx}, scale {s} ({h}x{w}, stride '
                           f'{stride:g}): per-head Gaussian prior (top) and modulated '
                           'co-attention (bottom); + = shared centre')]


def main(argv: Optional[Sequence[str]] = None) -> Dict[str, object]:
    args = parse_args(argv)
    import torch

    import mmdet_ddetr  # noqa: F401  (registers our models)
    from mmdet.apis import init_detector
    from mmdet_ddetr.analysis.attention import MSDARecorder, SMCARecorder
    from mmdet_ddetr.analysis.flops import TensorForward
    from mmdet_ddetr.models.deformable_detr.deformable_attention import MSDeformAttention

    quiet_init_log(args.verbose)
    model = init_detector(args.config, args.checkpoint, device=args.device)
    model.eval()
    inputs, samples, image = prepare_inputs(model, args.img)
    forward = TensorForward(model, samples)

    is_ddetr = any(isinstance(m, MSDeformAttention) for m in model.modules())
    from mmdet_ddetr.models.smca_detr import SMCADecoderLayerBase
    is_smca = any(isinstance(m, SMCADecoderLayerBase) for m in model.modules())
    if not (is_ddetr or is_smca):
        raise SystemExit('error: the model has neither deformable attention nor SMCA layers; '
                         'nothing to draw')
    recorder = MSDARecorder(model) if is_ddetr else SMCARecorder(model)
    with torch.no_grad(), recorder:
        cls_scores, bbox_preds = forward(inputs)[:2]
    sample = samples[0]
    dets = top_queries(cls_scores, bbox_preds, model.bbox_head.num_classes,
                       sample.img_shape, args.topk)
    os.makedirs(args.out_dir, exist_ok=True)
    if is_ddetr:
        written = draw_ddetr(model, recorder, dets, image, args, sample, args.out_dir)
    else:
        written = draw_smca(model, recorder, dets, image, args, args.out_dir)
    for det in dets:
        print(f'query {det["query"]:4d}  {_class_name(model, det["label"]):<10} '
              f'score {det["score"]:.3f}  box {[round(v, 1) for v in det["box"]]}')
    for path in written:
        print(f'wrote {path}')
    return dict(files=written, detections=dets)


if __name__ == '__main__':
    main()

"""Count the FLOPs of a detector with the deformable attention included.

One multiply-add counts as one FLOP (mmengine's / fvcore's convention, which the DETR and
Deformable DETR papers used). Multi-scale deformable attention is counted as
``5 * num_query * levels * points * embed_dims`` per call (4 bilinear taps + 1 weighting per
channel, Deformable DETR appendix A.1) on top of its Linear layers; see
``mmdet_ddetr/analysis/flops.py`` and ``docs/analysis.md``.

Input size: the papers average over the first 100 COCO val2017 images after the
(800, 1333) resize. Without COCO, ``--shape H W`` counts one fixed size (default 800 x 1066,
a resized 640x480 COCO image, see docs/analysis.md); with ``--coco-ann`` the sizes of the first
``--num-images`` images of a COCO annotation file (by image id, as the official loaders order
them) are resized like the test transform and the FLOPs averaged, which is the papers'
protocol (no image files are read: FLOPs depend on the shape only).

Examples::

    python tools/analysis_tools/get_flops.py \
        configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py
    python tools/analysis_tools/get_flops.py \
        configs/deformable_detr/deformable-detr-single-scale_r50_16xb2-50e_coco.py \
        --shape 800 1333 --out flops.json
    python tools/analysis_tools/get_flops.py CONFIG \
        --coco-ann data/coco/annotations/instances_val2017.json --num-images 100
"""
import argparse
import json
import os
import os.path as osp
from typing import List, Optional, Sequence, Tuple

from mmdet_ddetr.utils.atomic_io import atomic_open
from mmdet_ddetr.utils.cli import add_verbose_argument, positive_int, quiet_init_log


#: Default input size (H, W): see docs/analysis.md, "Which input size".
DEFAULT_SHAPE = (800, 1066)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction
    parser = argparse.ArgumentParser(
        description='Count FLOPs (multiply-adds) of a detector, deformable attention included.')
    parser.add_argument('config', help='model config file')
    parser.add_argument('--shape', type=positive_int, nargs=2, metavar=('H', 'W'),
                        default=None,
                        help=f'input height and width (default {DEFAULT_SHAPE[0]} '
                        f'{DEFAULT_SHAPE[1]}); exclusive with --coco-ann')
    parser.add_argument('--coco-ann', help='COCO annotation json: average over the resized '
                        'sizes of its first --num-images images (the papers\' protocol)')
    parser.add_argument('--num-images', type=positive_int, default=100,
                        help='images of --coco-ann to average over (default 100)')
    parser.add_argument('--count-batchnorm', action='store_true',
                        help='count BatchNorm as 2 FLOPs per element (mmengine default; the '
                        'papers\' frozen BN is not counted)')
    parser.add_argument('--device', default='cpu', help='device to trace on (default cpu)')
    parser.add_argument('--out', help='also write the report as JSON to this file')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. model.num_queries=100')
    add_verbose_argument(parser)
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    if args.coco_ann is not None:
        if args.shape is not None:
            parser.error('--shape and --coco-ann are exclusive: give one input-size source')
        if not osp.isfile(args.coco_ann):
            parser.error(f'--coco-ann file {args.coco_ann!r} does not exist')
    elif args.shape is None:
        args.shape = list(DEFAULT_SHAPE)
    if args.out is not None and osp.isdir(args.out):
        parser.error(f'--out {args.out!r} is a directory; give a file name')
    return args


def coco_shapes(ann_file: str, num_images: int) -> List[Tuple[int, int]]:
    """Resized (H, W) of the first ``num_images`` images of a COCO file, ordered by id.

    Raises:
        ValueError: for a file without ``images`` entries carrying ``height``/``width``.
    """
    from mmdet_ddetr.analysis.flops import resized_shape
    with open(ann_file) as f:
        data = json.load(f)
    images = sorted(data.get('images', []), key=lambda im: im['id'])[:num_images]
    if not images:
        raise ValueError(f'{ann_file} lists no images')
    try:
        return [resized_shape(int(im['height']), int(im['width'])) for im in images]
    except KeyError as e:
        raise ValueError(f'{ann_file}: image entries need height and width ({e} missing)')


def build_detector(config: str, cfg_options=None, device: str = 'cpu'):
    """Build the model of ``config`` without any pretrained weights (nothing downloads)."""
    from mmengine.config import Config
    from mmengine.registry import DefaultScope, init_default_scope

    import mmdet_ddetr  # noqa: F401  (registers our models)
    from mmdet.registry import MODELS
    cfg = Config.fromfile(config)
    if cfg_options:
        cfg.merge_from_dict(cfg_options)
    if DefaultScope.get_current_instance() is None:
        init_default_scope(cfg.get('default_scope', 'mmdet'))
    model_cfg = cfg.model
    if model_cfg.get('backbone') is not None:
        model_cfg.backbone.init_cfg = None
    model_cfg.init_cfg = None
    model = MODELS.build(model_cfg)
    model.init_weights()
    return model.to(device)


def main(argv: Optional[Sequence[str]] = None) -> dict:
    args = parse_args(argv)
    from mmdet_ddetr.analysis.flops import average_report, count_flops, gflops

    quiet_init_log(args.verbose)
    model = build_detector(args.config, args.cfg_options, args.device)
    if args.coco_ann:
        shapes = coco_shapes(args.coco_ann, args.num_images)
    else:
        shapes = [tuple(args.shape)]
    reports = []
    for i, (h, w) in enumerate(shapes):
        reports.append(count_flops(model, h, w, count_batchnorm=args.count_batchnorm))
        if len(shapes) > 1:
            print(f'[{i + 1}/{len(shapes)}] {h}x{w}: {gflops(reports[-1].total)} GFLOPs',
                  flush=True)
    report = average_report(reports) if len(reports) > 1 else reports[0]

    where = (f'mean of {len(shapes)} COCO images (mean size {report.shape[0]}x'
             f'{report.shape[1]})' if len(shapes) > 1 else
             f'input {report.shape[0]}x{report.shape[1]}')
    lines = [
        '=' * 60,
        f'Config:   {args.config}',
        f'Input:    {where}',
        f'FLOPs:    {gflops(report.total)} GFLOPs (1 multiply-add = 1 FLOP)',
        f'Params:   {report.params / 1e6:.2f} M',
        '-' * 60,
    ]
    for part, value in report.by_part.items():
        lines.append(f'  {part:<10} {gflops(value):>9} GFLOPs')
    lines.append(f'  of which deformable sampling (MSDA op, {report.msda_calls} modules): '
                 f'{gflops(report.msda)} GFLOPs')
    lines.append('-' * 60)
    lines.append('By op: ' + ', '.join(f'{k}={gflops(v)}G' for k, v in
                                        sorted(report.by_op.items(), key=lambda kv: -kv[1])))
    if report.uncounted_ops:
        lines.append('Not counted (element-wise / no multiply-add handle): ' +
                     ', '.join(sorted(k.split('::')[-1] for k in report.uncounted_ops)))
    lines.append('=' * 60)
    print('\n'.join(lines))
    payload = dict(config=args.config, shapes=[list(s) for s in shapes],
                   count_batchnorm=args.count_batchnorm, **report.as_dict())
    if args.out:
        os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
        with atomic_open(args.out, 'w') as f:
            json.dump(payload, f, indent=2)
        print(f'report written to {args.out}')
    return payload


if __name__ == '__main__':
    main()

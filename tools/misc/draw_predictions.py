"""Draw a detector's predictions on one image (next to its ground truth when annotated).

Example::

    python tools/misc/draw_predictions.py CONFIG CHECKPOINT \
        --img data/synthetic/val/000000.png --out work_dirs/demo/predictions.png

The ground truth is looked up by file name in ``--ann-file`` (default: the annotation file of
the config's test dataset); when found, the picture shows ground truth (left) and predictions
(right). Small images are upscaled first (``--scale``) so that labels stay readable. An image of
the config's dataset that is not there fails with the dataset error of the training tools (which
key to set, how to generate the synthetic data).
"""
import argparse
import json
import os
import os.path as osp
import sys
from typing import Optional

import mmcv
import torch
from mmengine.config import Config, DictAction
from mmengine.structures import InstanceData

import mmdet_ddetr  # noqa: F401  (registers the custom modules)
from mmdet_ddetr.datasets.data_root import load_config, missing_dataset_message
from mmdet.apis import inference_detector, init_detector
from mmdet.registry import VISUALIZERS
from mmdet.structures import DetDataSample


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Draw predictions on one image')
    parser.add_argument('config', help='model config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument('--img', default='data/synthetic/val/000000.png', help='image file')
    parser.add_argument('--out', default='predictions.png', help='output PNG file')
    parser.add_argument('--ann-file', default=None,
                        help='COCO annotations holding the image (default: the config\'s '
                        'test annotations); ground truth is drawn when the image is found')
    parser.add_argument('--score-thr', type=float, default=0.3,
                        help='hide predictions scoring below this')
    parser.add_argument('--scale', type=float, default=None,
                        help='upscale factor for drawing (default: to about 512 px)')
    parser.add_argument('--device', default='cpu', help='e.g. cpu or cuda:0')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings; data_root=PATH moves the dataset')
    return parser.parse_args(argv)


def test_dataset(cfg: Config) -> dict:
    """The config's test dataset dict (empty when it has none)."""
    return cfg.get('test_dataloader', {}).get('dataset', {})


def check_image(cfg: Config, img: str) -> None:
    """Exit with the dataset error when ``img`` is a missing file of the config's dataset, with
    'image not found' when it is any other missing file."""
    if osp.isfile(img):
        return
    dataset = test_dataset(cfg)
    data_root = dataset.get('data_root')
    if data_root and osp.commonpath([osp.abspath(data_root), osp.abspath(img)]) == \
            osp.abspath(data_root):
        sys.exit(missing_dataset_message(
            img, data_root, synthetic=dataset.get('type') == 'SyntheticCocoDataset'))
    sys.exit(f'image not found: {img}')


def default_ann_file(cfg) -> Optional[str]:
    """The annotation file of the config's test dataset, if it has one."""
    dataset = test_dataset(cfg)
    ann_file = dataset.get('ann_file')
    if not ann_file:
        return None
    return osp.join(dataset.get('data_root', '') or '', ann_file)


def load_ground_truth(ann_file: str, img_path: str, classes) -> Optional[InstanceData]:
    """Boxes (xyxy) and 0-based labels of ``img_path`` from a COCO file, None if absent."""
    with open(ann_file) as f:
        coco = json.load(f)
    name = osp.basename(img_path)
    matches = [im for im in coco['images'] if osp.basename(im['file_name']) == name]
    if len(matches) != 1:
        return None
    # Map category ids to the model's class order by name (ids need not be contiguous).
    cat_names = {c['id']: c['name'] for c in coco['categories']}
    boxes, labels = [], []
    for ann in coco['annotations']:
        if ann['image_id'] == matches[0]['id'] and cat_names[ann['category_id']] in classes:
            x, y, w, h = ann['bbox']
            boxes.append([x, y, x + w, y + h])
            labels.append(list(classes).index(cat_names[ann['category_id']]))
    gt = InstanceData()
    gt.bboxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    gt.labels = torch.tensor(labels, dtype=torch.long)
    return gt


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_image(cfg, args.img)
    if args.ann_file and not osp.isfile(args.ann_file):
        sys.exit(f'--ann-file not found: {args.ann_file}')
    model = init_detector(cfg, args.checkpoint, device=args.device)
    result: DetDataSample = inference_detector(model, args.img)

    image = mmcv.imread(args.img, channel_order='rgb')
    scale = args.scale or max(1.0, 512 / max(image.shape[:2]))
    if scale != 1.0:
        image = mmcv.imrescale(image, scale, interpolation='nearest')
    pred = result.pred_instances.cpu()
    pred.bboxes = pred.bboxes * scale
    sample = DetDataSample(pred_instances=pred)

    classes = model.dataset_meta.get('classes', ())
    ann_file = args.ann_file or default_ann_file(model.cfg)
    gt = None
    if ann_file and osp.isfile(ann_file):
        gt = load_ground_truth(ann_file, args.img, classes)
    elif ann_file:
        print(f'ground truth not drawn: {ann_file} does not exist', file=sys.stderr)
    if gt is not None:
        gt.bboxes = gt.bboxes * scale
        sample.gt_instances = gt

    # Only the returned/saved image is needed: no storage backends (they want a save_dir).
    visualizer = VISUALIZERS.build(dict(model.cfg.visualizer, vis_backends=None))
    visualizer.dataset_meta = model.dataset_meta
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    visualizer.add_datasample(
        'predictions', image, data_sample=sample, draw_gt=gt is not None, draw_pred=True,
        show=False, pred_score_thr=args.score_thr, out_file=args.out)

    keep = pred.scores >= args.score_thr
    print(f'{int(keep.sum())} detections with score >= {args.score_thr} '
          f'(ground truth: {"n/a" if gt is None else len(gt)}) -> {args.out}')
    for label, score, box in zip(pred.labels[keep].tolist(), pred.scores[keep].tolist(),
                                 (pred.bboxes[keep] / scale).tolist()):
        name = classes[label] if label < len(classes) else str(label)
        print(f'  {name:10s} {score:.2f} [{", ".join(f"{v:.0f}" for v in box)}]')


if __name__ == '__main__':
    main()

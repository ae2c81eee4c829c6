"""Check a config's datasets before a long run: decode every image, check every annotation.

Example::

    python tools/misc/check_dataset.py configs/deformable_detr/deformable-detr_r50_16xb2-50e_coco.py

For each of the train / val / test datasets (each annotation file once) it reports, with a
progress bar and then a summary table: config classes missing from the annotation's category
names, boxes that mmdet's CocoDataset would drop (and why), a training set without boxes, and
missing, empty or undecodable images. Exit status 0 when nothing stops a run, 1 otherwise
(dropped boxes alone are a warning: mmdet skips them).
"""
import argparse
import os.path as osp
import sys
from collections import defaultdict
from typing import Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.fileio import load
from mmengine.utils import ProgressBar
from terminaltables import AsciiTable

import mmdet_ddetr  # noqa: F401  (registers the modules even without custom_imports)
from mmdet.registry import DATASETS
from mmdet.utils import register_all_modules
from mmdet_ddetr.datasets.annotation_audit import AnnotationAudit, check_class_names
from mmdet_ddetr.datasets.checked_coco import image_file_problem

SPLITS = ('train', 'val', 'test')
MAX_LISTED = 10  # problems listed by name per dataset; the table has the counts


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='train / test config file')
    parser.add_argument('--splits', nargs='+', choices=SPLITS, default=list(SPLITS),
                        help='which dataloaders to check (default: all three)')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, e.g. data_root=/data/coco/')
    args = parser.parse_args(argv)
    if not osp.isfile(args.config):
        parser.error(f'config file {args.config!r} does not exist')
    return args


def _coco_dataset_cfg(cfg: Config, split: str) -> Optional[dict]:
    """The COCO-style dataset config of ``<split>_dataloader``, unwrapped from dataset
    wrappers (RepeatDataset ...); None when the config has no such dataloader."""
    loader = cfg.get(f'{split}_dataloader')
    if not loader:
        return None
    ds = loader['dataset']
    while 'dataset' in ds:
        ds = ds['dataset']
    return dict(ds)


def check_dataset(ds_cfg: dict, split: str) -> Dict:
    """Check one dataset; returns the row of the summary table and the problems found."""
    # lazy_init: only the joined paths and the metainfo, not mmdet's own (dropping) parsing.
    dataset = DATASETS.build(dict(ds_cfg, lazy_init=True))
    ann_file, img_dir = dataset.ann_file, dataset.data_prefix.get('img', '')
    classes = dataset.metainfo['classes']
    coco = load(ann_file)
    categories = {c['id']: c['name'] for c in coco.get('categories', [])}
    errors: List[str] = []
    try:
        check_class_names(classes, categories, ann_file)
    except ValueError as exc:
        errors.append(str(exc))
    cat_ids = {i for i, name in categories.items() if name in classes}
    anns_by_image = defaultdict(list)
    for ann in coco.get('annotations', []):
        anns_by_image[ann['image_id']].append(ann)
    audit, bad_images = AnnotationAudit(), []
    images = coco.get('images', [])
    print(f'[{split}] {ann_file}: {len(images)} images')
    progress = ProgressBar(len(images))
    for img in images:
        audit.add(anns_by_image[img['id']], img['width'], img['height'], cat_ids)
        path = osp.join(img_dir, img['file_name'])
        problem = image_file_problem(path)
        if problem is not None:
            bad_images.append(f'{path} {problem}')
        progress.update()
    print()
    if bad_images:
        errors.append(f'{len(bad_images)} unreadable image(s): ' + '; '.join(
            bad_images[:MAX_LISTED]) + (' ...' if len(bad_images) > MAX_LISTED else ''))
    if split == 'train' and audit.kept == 0:
        errors.append(f'no box left to train on ({audit.total} annotations)')
    warnings = [audit.summary()] if audit.dropped else []
    row = [split, ann_file, len(images), len(bad_images), audit.total,
           sum(audit.dropped.values()), 'ERROR' if errors else ('warning' if warnings else 'ok')]
    return dict(row=row, errors=errors, warnings=warnings)


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    register_all_modules(init_default_scope=True)
    rows = [['split', 'annotation file', 'images', 'unreadable', 'boxes', 'dropped', 'status']]
    notes, failed, seen = [], False, set()
    for split in args.splits:
        ds_cfg = _coco_dataset_cfg(cfg, split)
        if ds_cfg is None:
            continue
        key = repr(sorted((k, repr(v)) for k, v in ds_cfg.items() if k != 'pipeline'))
        if key in seen:  # test_dataloader = val_dataloader in most configs
            continue
        seen.add(key)
        result = check_dataset(ds_cfg, split)
        rows.append(result['row'])
        notes += [f'[{split}] error: {e}' for e in result['errors']]
        notes += [f'[{split}] warning: {w} (mmdet skips them)' for w in result['warnings']]
        failed |= bool(result['errors'])
    print(AsciiTable(rows).table)
    for note in notes:
        print(note)
    print('check_dataset: ' + ('problems found, see the errors above' if failed else 'ok'))
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())

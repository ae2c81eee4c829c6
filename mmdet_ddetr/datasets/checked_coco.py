"""mmdet's ``CocoDataset`` that names data mistakes when it is built instead of training on them.

* Config classes that are not category names of the annotation file: an error listing both
  (mmdet would drop every box of those classes, train on nothing and fail at evaluation).
* Boxes that mmdet drops (unknown category id, zero/negative size, NaN, outside the image):
  counted and logged once, e.g. ``dropped 12 of 2435 boxes: 7 unknown category id ...``.
* A training dataset without a single box left: an error.
* A missing, empty or undecodable image: an error naming the file when it is loaded (mmcv
  raises a bare OpenCV assertion for an empty file).

The configs select it with ``dataset_type = 'CheckedCocoDataset'``; importing ``mmdet_ddetr``
(the configs' ``custom_imports``) registers it, so our tools, mmdet's tools and ``mim`` all get
the checks.
"""
import logging
import os.path as osp
from typing import Any, Dict, List, Optional

import cv2
import numpy as np
from mmengine.logging import print_log

from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from .annotation_audit import AnnotationAudit, check_class_names
from .data_root import check_dataset_files


def image_file_problem(path: str) -> Optional[str]:
    """Why the image file at ``path`` cannot be read (``'does not exist'``, ``'is empty
    (0 bytes)'``, ``'cannot be decoded ...'``), or None when OpenCV decodes it."""
    if not osp.isfile(path):
        return 'does not exist'
    if osp.getsize(path) == 0:
        return 'is empty (0 bytes)'
    data = np.fromfile(path, dtype=np.uint8)
    if cv2.imdecode(data, cv2.IMREAD_UNCHANGED) is None:
        return 'cannot be decoded (truncated, corrupt or not an image)'
    return None


class ImageFileError(RuntimeError):
    """An image listed in the annotations cannot be read; the message names the file."""


@DATASETS.register_module()
class CheckedCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` with the build-time checks of the module docstring.

    Args and behaviour otherwise those of ``CocoDataset``.
    """

    #: Whether the data is the embedded synthetic dataset (a missing file's message then gives
    #: the command that generates it).
    embedded_data = False

    def load_data_list(self) -> List[dict]:
        """The files checked (a missing one names ``data_root``), mmdet's list, then the
        class-name check; the boxes are counted while it parses."""
        check_dataset_files(self.data_root, [self.ann_file, self.data_prefix.get('img', '')],
                            synthetic=self.embedded_data)
        self._audit = AnnotationAudit()
        self._ann_categories: Optional[Dict[int, str]] = None
        data_list = super().load_data_list()
        if self._ann_categories is not None:
            check_class_names(self.metainfo['classes'], self._ann_categories, self.ann_file)
        return data_list

    def parse_data_info(self, raw_data_info: dict) -> Dict[str, Any]:
        """mmdet's parsing of one image, counting the boxes it drops and why."""
        if self._ann_categories is None:  # self.coco only exists while load_data_list runs
            self._ann_categories = {c['id']: c['name'] for c in self.coco.cats.values()}
        img_info = raw_data_info['raw_img_info']
        self._audit.add(raw_data_info['raw_ann_info'], img_info['width'], img_info['height'],
                        self.cat_ids)
        return super().parse_data_info(raw_data_info)

    def full_init(self) -> None:
        """Load, filter and check once; report the dropped boxes once."""
        if self._fully_initialized:
            return
        super().full_init()
        audit = self._audit
        if audit.dropped:
            print_log(f'{self.ann_file}: {audit.summary()} (mmdet skips such annotations; '
                      'tools/misc/check_dataset.py lists them)', logger='current',
                      level=logging.WARNING)
        if not self.test_mode and audit.kept == 0:
            raise ValueError(
                f'{self.ann_file}: no box left to train on ({audit.total} annotations in the '
                f'file{"; " + audit.summary() if audit.total else ""}). Check ann_file, the '
                'category names (metainfo.classes) and the boxes.')

    def prepare_data(self, idx: int) -> Any:
        """mmdet's pipeline; a failure caused by an unreadable image names the file."""
        try:
            return super().prepare_data(idx)
        except Exception as exc:
            path = self.get_data_info(idx).get('img_path', '')
            problem = image_file_problem(path) if path else None
            if problem is None:
                raise
            raise ImageFileError(
                f'image {path} {problem} (listed in {self.ann_file}); fix or remove it, '
                'tools/misc/check_dataset.py CONFIG checks every image') from exc


__all__ = ['CheckedCocoDataset', 'ImageFileError', 'image_file_problem']

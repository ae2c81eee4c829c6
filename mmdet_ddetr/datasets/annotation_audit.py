"""Why mmdet's ``CocoDataset`` drops an annotation, counted so that it can be reported.

mmdet's ``CocoDataset.parse_data_info`` silently skips a box that lies outside its image, has
an area <= 0 or a side < 1 px, or whose category id is not one of the config's classes; a NaN
coordinate makes the overlap test fail, so such boxes are skipped too. :func:`drop_reason`
applies the same tests in the same order and names the one that skips an annotation, and
:class:`AnnotationAudit` counts them for the one-line report at dataset build. Only the
standard library is used, so ``tools/misc/check_dataset.py`` shares it.
"""
import math
from collections import Counter
from typing import Dict, Iterable, List, Mapping, Optional, Sequence

NAN_BOX = 'NaN box'
OUTSIDE = 'box outside the image'
TOO_SMALL = 'zero/negative box (side < 1 px or area <= 0)'
UNKNOWN_CATEGORY = 'unknown category id'


def drop_reason(ann: Mapping, width: float, height: float,
                cat_ids: Iterable[int]) -> Optional[str]:
    """The reason mmdet's ``CocoDataset`` skips ``ann``, or None when it keeps it.

    Args:
        ann: One COCO annotation (``bbox`` [x, y, w, h], ``area``, ``category_id``); one
            marked ``ignore`` must be filtered out by the caller (mmdet skips it on purpose).
        width: Width of the annotation's image, in pixels.
        height: Height of the annotation's image, in pixels.
        cat_ids: Category ids of the config's classes.
    """
    x1, y1, w, h = (float(v) for v in ann['bbox'])
    # mmdet's own tests, in its order; a NaN coordinate makes the overlap 0 (max(0, nan) == 0).
    inter_w = max(0, min(x1 + w, width) - max(x1, 0))
    inter_h = max(0, min(y1 + h, height) - max(y1, 0))
    if inter_w * inter_h == 0:
        if any(math.isnan(v) for v in (x1, y1, w, h)):
            return NAN_BOX
        return TOO_SMALL if w < 1 or h < 1 else OUTSIDE
    if ann['area'] <= 0 or w < 1 or h < 1:
        return TOO_SMALL
    if ann['category_id'] not in cat_ids:
        return UNKNOWN_CATEGORY
    return None


class AnnotationAudit:
    """Counts of the boxes of one annotation file, kept and dropped by reason."""

    def __init__(self) -> None:
        self.total = 0
        self.dropped: Counter = Counter()
        self.unknown_ids: Counter = Counter()

    @property
    def kept(self) -> int:
        return self.total - sum(self.dropped.values())

    def add(self, anns: Sequence[Mapping], width: float, height: float,
            cat_ids: Iterable[int]) -> None:
        """Count the annotations of one image (those marked ``ignore`` are left out)."""
        cat_ids = set(cat_ids)
        for ann in anns:
            if ann.get('ignore', False):
                continue
            self.total += 1
            reason = drop_reason(ann, width, height, cat_ids)
            if reason is not None:
                self.dropped[reason] += 1
            if reason == UNKNOWN_CATEGORY:
                self.unknown_ids[ann['category_id']] += 1

    def summary(self) -> str:
        """``'dropped 12 of 2435 boxes: 7 unknown category id (ids 12, 99), ...'``."""
        parts = []
        for reason, count in self.dropped.most_common():
            part = f'{count} {reason}'
            if reason == UNKNOWN_CATEGORY:
                ids = sorted(self.unknown_ids)
                part += f' (ids {", ".join(map(str, ids[:10]))}{" ..." if len(ids) > 10 else ""})'
            parts.append(part)
        return f'dropped {sum(self.dropped.values())} of {self.total} boxes: {", ".join(parts)}'


def check_class_names(classes: Sequence[str], ann_categories: Dict[int, str],
                      ann_file: str) -> None:
    """Raise when a class of the config has no category of that name in the annotations.

    mmdet looks the config's class names up among the annotation file's category names and
    skips the names it does not find: every box of such a class is then dropped, the model
    trains on nothing and evaluation fails with an ``IndexError``.

    Args:
        classes: The config's ``metainfo.classes``.
        ann_categories: Category id -> name, from the annotation file.
        ann_file: The annotation file, for the message.
    """
    names = set(ann_categories.values())
    missing: List[str] = [c for c in classes if c not in names]
    if missing:
        raise ValueError(
            f'{ann_file}: the config\'s classes {missing} are not category names of the '
            f'annotations, whose boxes would all be dropped. Config classes: {list(classes)}; '
            f'annotation categories: {sorted(names)}. Set metainfo=dict(classes=...) in the '
            'dataset config to the annotation names (same spelling) or fix the file.')


__all__ = ['AnnotationAudit', 'check_class_names', 'drop_reason', 'NAN_BOX', 'OUTSIDE',
           'TOO_SMALL', 'UNKNOWN_CATEGORY']

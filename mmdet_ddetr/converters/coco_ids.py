"""COCO category ids (1..90 with gaps) of the 80 classes, in mmdet's contiguous label order.

Official DETR-family heads index their class logits by the raw category id (91 slots); label
``i`` of mmdet's ``CocoDataset`` is category ``COCO80_IDS[i]``.
"""
from typing import Tuple

COCO80_IDS: Tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27,
    28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53,
    54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80,
    81, 82, 84, 85, 86, 87, 88, 89, 90)

__all__ = ['COCO80_IDS']

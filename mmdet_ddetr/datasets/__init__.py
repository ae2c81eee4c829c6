"""Datasets: the embedded synthetic shapes dataset (COCO format).

Importing this package needs numpy and OpenCV only (the generator runs before mmdet is installed):
:mod:`.synthetic_coco` (the configs' ``SyntheticCocoDataset``, imported by
``import mmdet_ddetr``) and :mod:`.data_root` (where the data is, ``load_config``) are imported by
name.
"""
from .synthetic import (CLASSES, SyntheticConfig, generate_synthetic_dataset, is_complete,
                        render_image)

__all__ = ['CLASSES', 'SyntheticConfig', 'generate_synthetic_dataset', 'is_complete', 'render_image']

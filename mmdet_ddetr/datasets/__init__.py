"""Datasets: the embedded synthetic shapes dataset (COCO format).

``checked_coco`` (mmdet's CocoDataset with build-time checks) imports mmdet and is therefore not
imported here: the generator must run before mmdet is installed. ``mmdet_ddetr.engine.hooks``
imports it, so importing ``mmdet_ddetr`` registers it.
"""
from .synthetic import (CLASSES, ForeignFolderError, SyntheticConfig, generate_synthetic_dataset,
                        is_complete, render_image)

__all__ = [
    'CLASSES', 'ForeignFolderError', 'SyntheticConfig', 'generate_synthetic_dataset',
    'is_complete', 'render_image'
]

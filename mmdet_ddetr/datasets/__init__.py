"""Datasets: the embedded synthetic shapes dataset (COCO format).

``checked_coco`` / ``synthetic_coco`` (mmdet's CocoDataset with build-time checks, the configs'
dataset types) import mmdet and are therefore not imported here: the generator must run before
mmdet is installed. ``import mmdet_ddetr`` imports them (registering them); ``data_root``
(where the data is, ``load_config``) is imported by name.
"""
from .synthetic import (CLASSES, ForeignFolderError, SyntheticConfig, generate_synthetic_dataset,
                        is_complete, render_image)

__all__ = [
    'CLASSES', 'ForeignFolderError', 'SyntheticConfig', 'generate_synthetic_dataset',
    'is_complete', 'render_image'
]

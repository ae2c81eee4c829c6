"""Datasets: the embedded synthetic shapes dataset (COCO format, read by mmdet's CocoDataset)."""
from .synthetic import (CLASSES, SyntheticConfig, generate_synthetic_dataset, is_complete,
                        render_image)

__all__ = ['CLASSES', 'SyntheticConfig', 'generate_synthetic_dataset', 'is_complete', 'render_image']

"""Datasets: the embedded synthetic shapes dataset (COCO format, read by mmdet's CocoDataset)."""
from .synthetic import (CLASSES, PALETTE, SyntheticConfig, generate_synthetic_dataset,
                        is_complete, render_image)

__all__ = [
    'CLASSES', 'PALETTE', 'SyntheticConfig', 'generate_synthetic_dataset', 'is_complete',
    'render_image'
]

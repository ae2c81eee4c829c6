"""The dataset type of the synthetic configs: :class:`CheckedCocoDataset` whose message for
missing files also gives the command that generates the embedded data.

Registered in mmdet's ``DATASETS`` when imported, which ``import mmdet_ddetr`` does. It is kept
out of ``mmdet_ddetr/datasets/__init__.py``, which the generator imports before mmdet is
installed.
"""
from mmdet.registry import DATASETS

from .checked_coco import CheckedCocoDataset


@DATASETS.register_module()
class SyntheticCocoDataset(CheckedCocoDataset):
    """:class:`CheckedCocoDataset` for the embedded synthetic shapes dataset: a missing
    annotation file or image folder raises ``FileNotFoundError`` naming ``data_root`` and the
    generate command, for every tool that builds the dataset (tools/train.py, tools/test.py,
    mmdet's tools, ``mim``)."""

    embedded_data = True


__all__ = ['SyntheticCocoDataset']

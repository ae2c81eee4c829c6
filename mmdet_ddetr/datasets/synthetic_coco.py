"""The dataset type of the synthetic configs: mmdet's ``CocoDataset`` that, when the data is not
there, says which key to set and how to generate it (instead of a bare ``FileNotFoundError`` of
``annotations/train.json``).

Registered in mmdet's ``DATASETS`` when imported, which ``import mmdet_ddetr`` does. It is
kept out of ``mmdet_ddetr/datasets/__init__.py``, which the generator imports before mmdet is
installed.
"""
from mmdet.datasets import CocoDataset
from mmdet.registry import DATASETS
from .data_root import check_dataset_files


@DATASETS.register_module()
class SyntheticCocoDataset(CocoDataset):
    """:class:`mmdet.datasets.CocoDataset` for the embedded synthetic shapes dataset.

    Loading, filtering and the metainfo are ``CocoDataset``'s. Before the annotations are read,
    the annotation file and the image folder are checked: a missing one raises
    ``FileNotFoundError`` naming ``data_root`` and the generate command, for every tool that
    builds the dataset (tools/train.py, tools/test.py, mmdet's tools, ``mim``).
    """

    def load_data_list(self) -> list:
        """Check the files, then load as ``CocoDataset`` does."""
        check_dataset_files(self.data_root, [self.ann_file, self.data_prefix.get('img', '')])
        return super().load_data_list()


__all__ = ['SyntheticCocoDataset']

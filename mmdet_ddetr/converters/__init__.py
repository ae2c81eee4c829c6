"""Converters from other implementations' checkpoints into mmdet_ddetr's layout."""
from .checkpoint_io import (ConverterError, as_mmengine_checkpoint, check_destination,
                            load_checkpoint_file, refuse_our_layout, save_atomic, state_dict_of)
from .coco_ids import COCO80_IDS
from .ddetr import detect_source, mmdet_to_ours, official_to_ours
from .smca import convert_smca_official_state_dict, infer_smca_hparams, remap_coco91_to_80

__all__ = [
    'ConverterError', 'load_checkpoint_file', 'state_dict_of', 'check_destination', 'save_atomic',
    'refuse_our_layout',
    'as_mmengine_checkpoint', 'official_to_ours', 'mmdet_to_ours', 'detect_source', 'COCO80_IDS',
    'convert_smca_official_state_dict', 'infer_smca_hparams', 'remap_coco91_to_80'
]

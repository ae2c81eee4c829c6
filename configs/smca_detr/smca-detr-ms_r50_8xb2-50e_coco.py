# Multi-scale SMCA-DETR, R50, 50 epochs (paper: 43.7 AP on COCO val2017); same recipe as the
# single-scale model.
_base_ = [
    '../_base_/models/smca-detr-ms_r50.py',
    '../_base_/datasets/coco_detection_detr.py',
    '../_base_/schedules/smca-detr_50e.py',
    '../_base_/default_runtime.py',
]

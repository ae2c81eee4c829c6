# Single-scale SMCA-DETR, R50, 50 epochs (official: 41.0 AP on COCO val2017).
_base_ = [
    '../_base_/models/smca-detr_r50.py',
    '../_base_/datasets/coco_detection_detr.py',
    '../_base_/schedules/smca-detr_50e.py',
    '../_base_/default_runtime.py',
]

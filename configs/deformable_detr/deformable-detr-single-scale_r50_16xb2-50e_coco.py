# Single-scale Deformable DETR: C5 only (stride 32), one level (paper Table 1: 39.4 AP;
# the DC5 variant, 41.5 AP, has no config here).
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
model = dict(
    num_feature_levels=1,
    backbone=dict(out_indices=(3, )),
    neck=dict(in_channels=[2048], num_outs=1))

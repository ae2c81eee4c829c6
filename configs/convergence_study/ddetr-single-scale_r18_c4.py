# Deformable DETR, single-scale: one level, ResNet-18 C4 (stride 16).
_base_ = '../deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'
model = dict(
    num_feature_levels=1,
    backbone=dict(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1), out_indices=(2, )),
    neck=dict(in_channels=[256], num_outs=1))

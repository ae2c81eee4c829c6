# Backbone swap by inheritance: single-scale SMCA-DETR with ResNet-101.
_base_ = 'smca-detr_r50_8xb2-50e_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

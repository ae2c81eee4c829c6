# Backbone swap by inheritance: ResNet-101.
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
model = dict(
    backbone=dict(
        depth=101,
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet101')))

# Baseline: mmdet's own DETR (type 'DETR', Hungarian matching, softmax CE + L1 + GIoU), sized
# like the quickstart models and reading ResNet-18 C4 (stride 16, as DETR-DC5) because C5 of a
# 128 px image is only 4x4. Dataset, runtime and optimiser come from the DDETR quickstart.
_base_ = '../deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'

embed_dims = 128
attn_cfg = dict(embed_dims=embed_dims, num_heads=8, dropout=0.0, batch_first=True)
ffn_cfg = dict(embed_dims=embed_dims, feedforward_channels=512, num_fcs=2, ffn_drop=0.0,
               act_cfg=dict(type='ReLU', inplace=True))

model = dict(
    _delete_=True,
    type='DETR',
    num_queries=50,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=18,
        num_stages=3,  # C4 is the last stage used
        strides=(1, 2, 2),
        dilations=(1, 1, 1),
        out_indices=(2, ),
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        style='pytorch',
        init_cfg=None),
    neck=dict(
        type='ChannelMapper',
        in_channels=[256],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(self_attn_cfg=attn_cfg, cross_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg),
        return_intermediate=True),
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True),
    bbox_head=dict(
        type='DETRHead',
        num_classes=5,
        embed_dims=embed_dims,
        loss_cls=dict(
            type='CrossEntropyLoss',
            bg_cls_weight=0.1,
            use_sigmoid=False,
            loss_weight=1.0,
            class_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        assigner=dict(
            type='HungarianAssigner',
            match_costs=[
                dict(type='ClassificationCost', weight=1.),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    test_cfg=dict(max_per_img=50))

# DETR has no sampling offsets / reference points: plain AdamW + clipping.
optim_wrapper = dict(paramwise_cfg=dict(_delete_=True))

# Single-scale SMCA-DETR (arXiv 2101.07448), official defaults (gaopengcuhk/SMCA-DETR e4df3ab):
# R50 C5, d=256, 8 heads, 6+6 post-norm layers, FFN 2048, 300 queries, scale type3, beta=8.
# Importing mmdet_ddetr registers its components (SMCA included) and makes every checkpoint load
# weights-only (docs/troubleshooting.md); it is all a config of yours needs too.
custom_imports = dict(imports=['mmdet_ddetr'], allow_failed_imports=False)

embed_dims = 256
num_heads = 8
# No `type`: every attention is mmcv's MultiheadAttention and every FFN mmcv's FFN, with torch's
# nn.Dropout (the reference path). The CPU quickstart config names the opt-in CPU speed type
# LeanMultiheadAttention instead (mmdet_ddetr/models/efficient, docs/configs.md).
attn_cfg = dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.1, batch_first=True)
ffn_cfg = dict(embed_dims=embed_dims, feedforward_channels=2048, num_fcs=2, ffn_drop=0.1,
               act_cfg=dict(type='ReLU', inplace=True))

model = dict(
    type='SMCADETR',
    num_queries=300,
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=1),
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(3, ),
        frozen_stages=1,  # official: stem + layer1 frozen, all BN frozen
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    # Official input_proj: a plain 1x1 conv with bias, no norm, left at PyTorch's default init
    # (kaiming-uniform a=sqrt(5), bias +-1/sqrt(fan_in)); ChannelMapper's own default would be
    # Xavier with zero bias (2.3x larger weights relative to the sine encoding).
    neck=dict(
        type='ChannelMapper',
        in_channels=[2048],
        kernel_size=1,
        out_channels=embed_dims,
        act_cfg=None,
        norm_cfg=None,
        num_outs=1,
        init_cfg=dict(type='TorchDefault', layer='Conv2d')),
    encoder=dict(  # PostNormEncoder: mmdet's DETR encoder, attention type from config
        num_layers=6,
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(
        type='SMCATransformerDecoder',
        num_layers=6,
        return_intermediate=True,
        # Centre = sigmoid(MLP(query)) * (w, h) / stride in cells. 'auto' derives the stride
        # from the padded input and the map: 32 on C5, the official code's fixed value, and
        # still right when a config changes the level (C4, DC5, C3). 'official' = always 32.
        feat_stride='auto',
        layer_cfg=dict(
            type='SMCATransformerDecoderLayer',
            self_attn_cfg=attn_cfg,
            cross_attn_cfg=attn_cfg,
            ffn_cfg=ffn_cfg,
            gaussian_prior_cfg=dict(
                type='SMCAGaussianPrior',
                # 'fixed' (type1) | 'head' (type2) | 'head_xy' (type3) | 'head_xy_cross' (type4)
                scale_type='head_xy',
                smooth=8.0,  # beta
                shared_heads=False))),
    # DETR-style sine encoding (no -0.5 offset, unlike Deformable DETR).
    positional_encoding=dict(num_feats=embed_dims // 2, normalize=True),
    bbox_head=dict(
        type='SMCAHead',
        num_classes=80,
        embed_dims=embed_dims,
        # Official layout: num_classes + 1 sigmoid logits, the last a never-positive
        # "no-object" slot (needed to load official weights; ignored at inference).
        with_no_object_logit=True,
        sync_cls_avg_factor=True,
        loss_cls=dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        # mmdet's HungarianAssigner, with NaN/inf costs named instead of failing inside scipy
        assigner=dict(
            type='FiniteCostHungarianAssigner',
            match_costs=[
                # eps as in the official matcher (mmdet's default is 1e-12).
                dict(type='FocalLossCost', weight=2.0, eps=1e-8),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    # The official PostProcess keeps num_queries (300) detections and does not clip boxes;
    # mmdet's evaluation keeps 100 and clips to the image.
    test_cfg=dict(max_per_img=100, clip_boxes=True, keep_no_object=False))

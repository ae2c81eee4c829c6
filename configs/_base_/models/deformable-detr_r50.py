# Deformable DETR, multi-scale (C3-C5 + one stride-2 extra level), paper defaults.
# Variants switch `with_box_refine` / `as_two_stage` / `num_feature_levels` (see configs/deformable_detr/).
# Importing mmdet_ddetr registers its components and makes every checkpoint load weights-only
# (docs/troubleshooting.md); it is all a config of yours needs too.
custom_imports = dict(imports=['mmdet_ddetr'], allow_failed_imports=False)

model = dict(
    type='DDETR',
    num_queries=300,
    num_feature_levels=4,
    with_box_refine=False,
    as_two_stage=False,
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
        out_indices=(1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad=False),
        norm_eval=True,
        style='pytorch',
        init_cfg=dict(type='Pretrained', checkpoint='torchvision://resnet50')),
    neck=dict(
        type='ChannelMapper',
        in_channels=[512, 1024, 2048],
        kernel_size=1,
        out_channels=256,
        # The official input projections keep their conv bias before GroupNorm; mmdet's stock
        # config drops it ('auto'), which makes official checkpoints impossible to load exactly.
        bias=True,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=4),
    # Each `# Name` below is the type built when the dict names none: the reference path
    # (mmcv's MultiheadAttention and FFN, torch's nn.Dropout). The CPU quickstart configs name
    # the opt-in CPU speed types instead (mmdet_ddetr/models/efficient, docs/configs.md).
    encoder=dict(  # DDETREncoder
        num_layers=6,
        layer_cfg=dict(  # PostNormEncoderLayer (registry alias DDETREncoderLayer)
            self_attn_cfg=dict(  # MSDeformAttention
                embed_dims=256, num_heads=8, num_points=4,
                dropout=0.1, batch_first=True),
            ffn_cfg=dict(  # mmcv FFN
                embed_dims=256, feedforward_channels=1024, ffn_drop=0.1))),
    decoder=dict(  # DDETRDecoder
        num_layers=6,
        return_intermediate=True,
        layer_cfg=dict(  # DDETRDecoderLayer
            self_attn_cfg=dict(  # mmcv MultiheadAttention
                embed_dims=256, num_heads=8, dropout=0.1, batch_first=True),
            cross_attn_cfg=dict(  # MSDeformAttention
                embed_dims=256, num_heads=8, num_points=4,
                dropout=0.1, batch_first=True),
            ffn_cfg=dict(  # mmcv FFN
                embed_dims=256, feedforward_channels=1024, ffn_drop=0.1)),
        post_norm_cfg=None),
    # Deformable DETR's sine encoding subtracts 0.5 from the cumulative position (offset=-0.5).
    positional_encoding=dict(num_feats=128, normalize=True, offset=-0.5),
    # Two-stage only: how encoder proposals are ranked. 'objectness' = a 1-channel class-agnostic
    # branch; 'class0' = the official (and mmdet) ranking by class channel 0 of a num_classes branch.
    proposal_generator=dict(type='DDETRProposalGenerator', scoring='objectness'),
    bbox_head=dict(
        type='DDETRHead',
        num_classes=80,
        sync_cls_avg_factor=True,
        loss_cls=dict(
            type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25,
            loss_weight=2.0),
        loss_bbox=dict(type='L1Loss', loss_weight=5.0),
        loss_iou=dict(type='GIoULoss', loss_weight=2.0)),
    train_cfg=dict(
        # mmdet's HungarianAssigner, with NaN/inf costs named instead of failing inside scipy
        assigner=dict(
            type='FiniteCostHungarianAssigner',
            match_costs=[
                dict(type='FocalLossCost', weight=2.0),
                dict(type='BBoxL1Cost', weight=5.0, box_format='xywh'),
                dict(type='IoUCost', iou_mode='giou', weight=2.0)
            ])),
    # clip_boxes: mmdet clamps boxes to the image; the official PostProcess does not.
    test_cfg=dict(max_per_img=100, clip_boxes=True))

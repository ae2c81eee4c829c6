# Quickstart: a small single-scale SMCA-DETR trained from scratch on the embedded synthetic
# shapes dataset, sized for 2 CPU cores in under 10 minutes. The architecture is the paper's
# (Gaussian-modulated co-attention, per-head offsets and per-axis scales, beta 8, Hungarian
# matching, focal + L1 + GIoU), only narrower, shallower, with fewer queries, and on ResNet-18
# C3 (stride 8, a 16x16 map) instead of C5: the images are 128 px, where C5 would be a 4x4 map
# and a beta-8 Gaussian would cover the whole image (C3 also trained better than C4 here).
_base_ = [
    '../_base_/models/smca-detr_r50.py',
    '../_base_/datasets/synthetic_detection.py',
    '../_base_/default_runtime.py',
]

embed_dims = 128
num_heads = 8
# CPU speed device (opt-in, docs/configs.md) for every attention (encoder, decoder self- and
# co-attention): mmcv's attention with the same weights and results that runs torch's fused
# kernel instead of materialising the softmax weights mmcv throws away. Every dropout here is 0,
# so no fast-dropout type is named.
attn_cfg = dict(type='LeanMultiheadAttention', embed_dims=embed_dims, num_heads=num_heads,
                dropout=0.0, batch_first=True)
ffn_cfg = dict(embed_dims=embed_dims, feedforward_channels=512, num_fcs=2, ffn_drop=0.0,
               act_cfg=dict(type='ReLU', inplace=True))

model = dict(
    num_queries=50,  # at most 5 objects per image
    backbone=dict(
        depth=18,
        num_stages=2,  # C3 is the last stage used: do not compute C4/C5
        strides=(1, 2),
        dilations=(1, 1),
        out_indices=(1, ),  # C3, stride 8
        # No pretrained weights (nothing is downloaded): every stage and BN layer trains.
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128], out_channels=embed_dims),
    encoder=dict(num_layers=2, layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(
        num_layers=3,
        feat_stride='auto',  # derived: 8 px per cell of C3
        layer_cfg=dict(self_attn_cfg=attn_cfg, cross_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(num_classes=5, embed_dims=embed_dims),
    test_cfg=dict(max_per_img=50))

# Batch 4: twice the optimizer steps of batch 8 for the same compute (early in training the
# number of updates limits a DETR); one low-lr epoch at the end. 12 epochs (2400 steps) fill
# the 10-minute budget on 2 CPU cores (8.5 min measured); mAP still rises at the end.
train_dataloader = dict(batch_size=4)
max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# Paper recipe (AdamW, weight decay 1e-4, grad clip 0.1) with a larger lr because the model is
# small and trained briefly, and no 0.1x backbone lr because the backbone is not pretrained.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[max_epochs - 1], gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=4, enable=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)

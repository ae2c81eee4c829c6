# Quickstart model: a small multi-scale Deformable DETR trained from scratch on the embedded
# synthetic shapes dataset (128 px images). The architecture is the paper's (multi-scale
# deformable attention, 4 feature levels C3-C5 + one stride-2 conv, Hungarian matching,
# focal + L1 + GIoU losses), only narrower (d 128), shallower (2 + 3 layers) and with fewer
# queries. This is the plain variant that the other small configs build on; `make demo` trains
# deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py (this model + box refinement +
# two-stage, batch 4, 4 epochs), which fits in 10 minutes on 2 CPU cores.
_base_ = [
    '../_base_/models/deformable-detr_r50.py',
    '../_base_/datasets/synthetic_detection.py',
    '../_base_/default_runtime.py',
]

embed_dims = 128
num_heads = 8
ffn_channels = 512

model = dict(
    num_queries=50,  # at most 5 objects per image
    backbone=dict(
        depth=18,
        # No pretrained weights (nothing is downloaded): every stage and BN layer trains.
        frozen_stages=-1,
        norm_cfg=dict(type='BN', requires_grad=True),
        norm_eval=False,
        init_cfg=None),
    neck=dict(in_channels=[128, 256, 512], out_channels=embed_dims),
    encoder=dict(
        num_layers=2,
        layer_cfg=dict(
            self_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=ffn_channels,
                         ffn_drop=0.0))),
    decoder=dict(
        num_layers=3,
        layer_cfg=dict(
            # CPU speed device (opt-in, docs/configs.md): mmcv's attention with the same weights
            # and results that runs torch's fused kernel instead of materialising the softmax
            # weights mmcv throws away. Every dropout here is 0, so no fast-dropout type is named.
            self_attn_cfg=dict(type='LeanMultiheadAttention', embed_dims=embed_dims,
                               num_heads=num_heads, dropout=0.0),
            cross_attn_cfg=dict(embed_dims=embed_dims, num_heads=num_heads, dropout=0.0),
            ffn_cfg=dict(embed_dims=embed_dims, feedforward_channels=ffn_channels,
                         ffn_drop=0.0))),
    positional_encoding=dict(num_feats=embed_dims // 2),
    bbox_head=dict(num_classes=5, embed_dims=embed_dims),
    test_cfg=dict(max_per_img=50))

max_epochs = 12
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

# Paper recipe (AdamW, weight decay 1e-4, grad clip 0.1, 0.1x lr for the sampling offsets and
# reference points), with a larger base lr because the model is small and trained briefly,
# and no 0.1x backbone lr because the backbone is not pretrained.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={
        'sampling_offsets': dict(lr_mult=0.1),
        'reference_points': dict(lr_mult=0.1)
    }))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[int(max_epochs * 0.8)], gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=8, enable=False)

default_hooks = dict(
    logger=dict(type='LoggerHook', interval=20),
    checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
log_processor = dict(window_size=20)

# 2 CPU cores: one loader process is plenty for 128 px PNGs and leaves a core to the model.
train_dataloader = dict(num_workers=1)
val_dataloader = dict(num_workers=1)
test_dataloader = dict(num_workers=1)

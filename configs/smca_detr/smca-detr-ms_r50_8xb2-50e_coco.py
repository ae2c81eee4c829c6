# Multi-scale SMCA-DETR, R50, 50 epochs (paper: 43.7 AP on COCO val2017).
_base_ = [
    '../_base_/models/smca-detr-ms_r50.py',
    '../_base_/datasets/coco_detection_detr.py',
    '../_base_/default_runtime.py',
]

# Same recipe as the single-scale model: AdamW 1e-4 (backbone 1e-5), wd 1e-4, clip 0.1,
# total batch 16, 50 epochs with x0.1 at 40.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(custom_keys={'backbone': dict(lr_mult=0.1)}))
max_epochs = 50
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[40],
         gamma=0.1)
]
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Deformable DETR, multi-scale (paper Table 1, "Deformable DETR": 43.8 AP official).
_base_ = [
    '../_base_/models/deformable-detr_r50.py',
    '../_base_/datasets/coco_detection_detr.py',
    '../_base_/default_runtime.py',
]

# Paper schedule: AdamW 2e-4, wd 1e-4, x0.1 lr on the backbone and on the layers that place
# sampling points (offsets, reference points), grad-norm clip 0.1, 50 epochs, x0.1 at 40.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2),
    paramwise_cfg=dict(
        custom_keys={
            'backbone': dict(lr_mult=0.1),
            'sampling_offsets': dict(lr_mult=0.1),
            'reference_points': dict(lr_mult=0.1),
        }))
max_epochs = 50
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
param_scheduler = [
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[40],
         gamma=0.1)
]
# The lr above is for a total batch of 32 (16 GPUs x 2 images); with --auto-scale-lr it is
# scaled linearly to your total batch.
auto_scale_lr = dict(enable=False, base_batch_size=32)

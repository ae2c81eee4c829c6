# SMCA-DETR official recipe: AdamW 1e-4 (backbone 1e-5), wd 1e-4, grad-norm clip 0.1, total
# batch 16 (8 GPUs x 2 images), 50 epochs with x0.1 at epoch 40.
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
# lr above is for a total batch of 16; --auto-scale-lr rescales it to your total batch.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The `make demo` model trained one epoch longer (lr drop after epoch 4): COCO bbox mAP ~0.31 on
# the synthetic val split for ~1.3x the compute of the 4-epoch demo schedule (~650 CPU-seconds
# on one thread, i.e. just over 10 minutes single-threaded; ~7 minutes on 2 free cores).
_base_ = './deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py'

max_epochs = 5
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[max_epochs - 1], gamma=0.1)
]

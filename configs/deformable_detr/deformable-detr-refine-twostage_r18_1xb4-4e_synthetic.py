# The `make demo` model: the quickstart Deformable DETR (ResNet-18 from scratch, d 128, 2 + 3
# layers, 50 queries, 4 levels) with iterative box refinement and the two-stage variant, which
# converge much faster than the plain model -- what matters when the whole budget is a few
# thousand images. 4 epochs x 800 images of 128 px: about 500 CPU-seconds on ONE thread, so
# under 10 minutes on 2 CPU cores; COCO bbox mAP ~0.25 on the synthetic val split
# (5 epochs with the lr drop after 4 reach ~0.31 in ~1.3x the time).
_base_ = './deformable-detr_r18_1xb8-quickstart_synthetic.py'

model = dict(with_box_refine=True, as_two_stage=True)

# Batch 4: twice the optimizer steps of batch 8 for the same compute; early in training the
# number of updates, not the gradient noise, is what limits a DETR.
train_dataloader = dict(batch_size=4)

max_epochs = 4
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100),
    # The last epoch at 0.1x lr sharpens the boxes: most of the final mAP comes from it.
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True,
         milestones=[max_epochs - 1], gamma=0.1)
]
auto_scale_lr = dict(base_batch_size=4)

# A checkpoint per epoch (only the latest kept): an interrupted `make demo` resumes.
default_hooks = dict(
    logger=dict(interval=50),
    checkpoint=dict(interval=1, max_keep_ckpts=1))

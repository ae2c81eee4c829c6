# Mixed precision, float16 with dynamic loss scaling (GPU). The deformable attention runs in
# float16 in mmcv's kernel; matching costs and losses run in float32 (DDETRHead).
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
optim_wrapper = dict(type='AmpOptimWrapper', loss_scale='dynamic')

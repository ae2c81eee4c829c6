# Mixed precision, bfloat16 (GPU; Ampere or newer). mmcv's deformable-attention kernel has no
# bfloat16, so MSDeformAttention runs it as a float32 island; matching costs and losses run in
# float32 (DDETRHead). No loss scaling is needed with bfloat16's float32-sized exponent.
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
optim_wrapper = dict(type='AmpOptimWrapper', dtype='bfloat16', loss_scale=1.0)

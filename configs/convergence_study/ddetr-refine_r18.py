# Deformable DETR + iterative bounding box refinement.
_base_ = 'ddetr_r18.py'
model = dict(with_box_refine=True)

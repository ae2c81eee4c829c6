# Deformable DETR + iterative bounding box refinement + two-stage.
_base_ = 'ddetr_r18.py'
model = dict(with_box_refine=True, as_two_stage=True)

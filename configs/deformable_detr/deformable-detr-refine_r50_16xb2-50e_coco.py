# + iterative bounding box refinement (paper Table 1: 45.4 AP official).
_base_ = 'deformable-detr_r50_16xb2-50e_coco.py'
model = dict(with_box_refine=True)

# + refinement + two-stage (paper Table 1: 46.2 AP official).
# Encoder proposals are ranked by a class-agnostic objectness branch; set
# proposal_generator.scoring='class0' for the official ranking (class channel 0).
_base_ = 'deformable-detr-refine_r50_16xb2-50e_coco.py'
model = dict(as_two_stage=True)

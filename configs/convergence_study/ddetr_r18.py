# Deformable DETR, multi-scale (4 levels: C3-C5 + a stride-2 conv on C5): the quickstart model.
_base_ = '../deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'

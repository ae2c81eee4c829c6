# Ablation (issue 13): the study's single-scale SMCA with beta relative to the map size,
# beta * (min(H, W) / 25)^2: on COCO's ~25 x 34 C5 maps that is the official beta 8 (a sigma of
# 2 cells, 6-8 % of the image); on the study's 8 x 8 C4 map it is 0.82 (sigma 0.64 cells, the
# same 8 % of the image) where the official beta 8 spans 25 % of it.
_base_ = './smca_r18_c4.py'

model = dict(decoder=dict(layer_cfg=dict(gaussian_prior_cfg=dict(smooth_ref_cells=25.0))))

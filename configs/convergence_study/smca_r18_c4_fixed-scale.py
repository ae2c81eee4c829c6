# Ablation (issue 13): the study's single-scale SMCA with the fixed-scale prior (official
# dynamic_scale type1: s = 1, only the per-head centre offsets are predicted).
_base_ = './smca_r18_c4.py'

model = dict(decoder=dict(layer_cfg=dict(gaussian_prior_cfg=dict(scale_type='fixed'))))

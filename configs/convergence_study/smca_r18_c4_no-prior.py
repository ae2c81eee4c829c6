# Ablation (issue 13): the study's single-scale SMCA with the Gaussian prior switched off
# (log G = 0: plain DETR co-attention). Everything else is SMCA's: the centre MLP added to the
# box, focal loss, the no-object logit, the matcher. SMCA minus this run = the prior's effect.
_base_ = './smca_r18_c4.py'

model = dict(decoder=dict(layer_cfg=dict(gaussian_prior_cfg=dict(enabled=False))))

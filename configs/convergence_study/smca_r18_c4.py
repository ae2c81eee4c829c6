# SMCA-DETR, single-scale, on ResNet-18 C4 (stride 16, an 8x8 map) like the study's other
# single-scale models. Built on the SMCA quickstart's model, with everything the study relies on
# pinned here so that tuning the quickstart does not change the study: the C4 input, the sizes
# (d 128, 2 + 3 layers, 50 queries), the official initialisation and the shared optimiser.
_base_ = '../smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py'

embed_dims = 128
model = dict(
    num_queries=50,
    backbone=dict(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1), out_indices=(2, )),
    neck=dict(in_channels=[256], out_channels=embed_dims),
    encoder=dict(num_layers=2),
    decoder=dict(num_layers=3, feat_stride='auto'))  # derived: 16 (C4)

# The study's optimiser for every model (AdamW 4e-4, weight decay 1e-4, clip 0.1).
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=4e-4, weight_decay=1e-4),
    clip_grad=dict(max_norm=0.1, norm_type=2))

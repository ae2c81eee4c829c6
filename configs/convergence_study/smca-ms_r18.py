# SMCA-DETR, multi-scale (paper sec. 3.3) at quickstart size: strides 16/32/64 (ResNet-18 C4,
# C5 and a stride-2 conv on C5: 8x8, 4x4, 2x2 on 128 px images), intra/multi-scale encoder
# (2 layers: intra, multi), per-scale Gaussian priors and scale selection.
_base_ = './smca_r18_c4.py'

embed_dims = 128
# The CPU speed attention of the SMCA quickstart config this study builds on (opt-in).
attn_cfg = dict(type='LeanMultiheadAttention', embed_dims=embed_dims, num_heads=8, dropout=0.0,
                batch_first=True)
ffn_cfg = dict(embed_dims=embed_dims, feedforward_channels=512, num_fcs=2, ffn_drop=0.0,
               act_cfg=dict(type='ReLU', inplace=True))

model = dict(
    type='SMCAMultiScaleDETR',
    num_feature_levels=3,
    backbone=dict(num_stages=4, strides=(1, 2, 2, 2), dilations=(1, 1, 1, 1),
                  out_indices=(2, 3)),
    neck=dict(
        _delete_=True,
        type='ChannelMapper',
        in_channels=[256, 512],
        kernel_size=1,
        out_channels=embed_dims,
        bias=True,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=3),
    encoder=dict(
        _delete_=True,
        type='SMCAMultiScaleEncoder',
        layer_types=['intra', 'multi'],
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(
        _delete_=True,
        type='SMCAMultiScaleDecoder',
        num_layers=3,
        return_intermediate=True,
        feat_strides=(16, 32, 64),
        layer_cfg=dict(
            type='SMCAMultiScaleDecoderLayer',
            num_scales=3,
            self_attn_cfg=attn_cfg,
            cross_attn_cfg=attn_cfg,
            ffn_cfg=ffn_cfg,
            gaussian_prior_cfg=dict(type='SMCAGaussianPrior', scale_type='head_xy', smooth=8.0,
                                    shared_heads=False),
            scale_selection_cfg=dict(type='SMCAScaleSelection', enabled=True))))

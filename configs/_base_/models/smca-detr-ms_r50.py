# Multi-scale SMCA-DETR as described in the paper (arXiv 2101.07448, sec. 3.3): strides 16/32/64
# (C4, C5 and a stride-2 conv on C5), "2Intra-Multi-2Intra" encoder, per-scale Gaussian priors
# with per-scale softmax and per-query scale selection, FFN 1024.
_base_ = './smca-detr_r50.py'

embed_dims = 256
attn_cfg = dict(embed_dims=embed_dims, num_heads=8, dropout=0.1, batch_first=True)
ffn_cfg = dict(embed_dims=embed_dims, feedforward_channels=1024, num_fcs=2, ffn_drop=0.1,
               act_cfg=dict(type='ReLU', inplace=True))

model = dict(
    type='SMCAMultiScaleDETR',
    num_feature_levels=3,
    backbone=dict(out_indices=(2, 3)),
    neck=dict(
        _delete_=True,
        type='ChannelMapper',
        in_channels=[1024, 2048],
        kernel_size=1,
        out_channels=embed_dims,
        bias=True,
        act_cfg=None,
        norm_cfg=dict(type='GN', num_groups=32),
        num_outs=3),  # the 3rd level = 3x3 stride-2 conv on C5
    encoder=dict(
        _delete_=True,
        type='SMCAMultiScaleEncoder',
        # 'intra' = self-attention within each scale (weights shared across scales),
        # 'multi' = self-attention over all scales together.
        layer_types=['intra', 'intra', 'multi', 'intra', 'intra'],
        layer_cfg=dict(self_attn_cfg=attn_cfg, ffn_cfg=ffn_cfg)),
    decoder=dict(
        _delete_=True,
        type='SMCAMultiScaleDecoder',
        num_layers=6,
        return_intermediate=True,
        feat_strides=(16, 32, 64),
        layer_cfg=dict(
            type='SMCAMultiScaleDecoderLayer',
            num_scales=3,
            self_attn_cfg=attn_cfg,
            cross_attn_cfg=attn_cfg,
            ffn_cfg=ffn_cfg,
            # Ablations: shared_heads=True (head-shared modulation), scale_type='fixed'.
            gaussian_prior_cfg=dict(
                type='SMCAGaussianPrior', scale_type='head_xy', smooth=8.0,
                shared_heads=False),
            # Ablation: enabled=False = no scale selection (equal weights per scale).
            scale_selection_cfg=dict(type='SMCAScaleSelection', enabled=True))))

"""The post-norm layers built from config equal mmdet's DETR layers, and follow their types."""
import copy

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention

from mmdet.models.layers.transformer import (DetrTransformerDecoderLayer,
                                             DetrTransformerEncoderLayer)
from mmdet_ddetr.models.common import PostNormDecoderLayer, PostNormEncoder, PostNormEncoderLayer
from mmdet_ddetr.models.efficient import FastDropout, FastDropoutFFN, LeanMultiheadAttention

BS, NQ, NK, DIM, HEADS = 2, 7, 11, 32, 4
LAYER_CFG = dict(self_attn_cfg=dict(embed_dims=DIM, num_heads=HEADS, dropout=0.1,
                                    batch_first=True),
                 ffn_cfg=dict(embed_dims=DIM, feedforward_channels=64, ffn_drop=0.1))


def layer_cfg(cross: bool) -> dict:
    cfg = copy.deepcopy(LAYER_CFG)
    if cross:
        cfg['cross_attn_cfg'] = copy.deepcopy(cfg['self_attn_cfg'])
    return cfg


def seq(n):
    return torch.randn(BS, n, DIM, dtype=torch.float64)


@pytest.mark.parametrize('ours_cls, mmdet_cls, cross', [
    (PostNormEncoderLayer, DetrTransformerEncoderLayer, False),
    (PostNormDecoderLayer, DetrTransformerDecoderLayer, True),
])
def test_same_weights_keys_and_outputs_as_mmdets_layers(ours_cls, mmdet_cls, cross):
    torch.manual_seed(0)
    ref = mmdet_cls(**layer_cfg(cross)).double().eval()
    torch.manual_seed(0)
    ours = ours_cls(**layer_cfg(cross)).double().eval()
    assert [type(m) for m in ours.modules()] == [
        ours_cls if type(m) is mmdet_cls else type(m) for m in ref.modules()]
    ref_state, our_state = ref.state_dict(), ours.state_dict()
    assert list(ref_state) == list(our_state)
    assert all(torch.equal(ref_state[k], our_state[k]) for k in ref_state)
    torch.manual_seed(1)
    q, qp = seq(NQ), seq(NQ)
    padding = torch.zeros(BS, NQ, dtype=torch.bool)
    padding[0, -2:] = True
    if cross:
        k, kp = seq(NK), seq(NK)
        kwargs = dict(query=q, key=k, value=k, query_pos=qp, key_pos=kp, key_padding_mask=None)
    else:
        kwargs = dict(query=q, query_pos=qp, key_padding_mask=padding)
    assert torch.equal(ours(**kwargs), ref(**kwargs))


@pytest.mark.parametrize('ours_cls, cross', [(PostNormEncoderLayer, False),
                                             (PostNormDecoderLayer, True)])
def test_sub_module_types_come_from_the_config(ours_cls, cross):
    cfg = layer_cfg(cross)
    plain = ours_cls(**copy.deepcopy(cfg))
    assert type(plain.self_attn) is MultiheadAttention and type(plain.ffn) is FFN
    for key in ('self_attn_cfg', 'cross_attn_cfg') if cross else ('self_attn_cfg', ):
        cfg[key]['type'] = 'LeanMultiheadAttention'
    cfg['ffn_cfg']['type'] = 'FastDropoutFFN'
    fast = ours_cls(**cfg)
    assert type(fast.self_attn) is LeanMultiheadAttention and type(fast.ffn) is FastDropoutFFN
    if cross:
        assert type(fast.cross_attn) is LeanMultiheadAttention
    assert any(isinstance(m, FastDropout) for m in fast.ffn.modules())
    assert list(fast.state_dict()) == list(plain.state_dict())


def test_encoder_refuses_activation_checkpointing():
    with pytest.raises(ValueError, match='num_cp'):
        PostNormEncoder(num_layers=2, layer_cfg=copy.deepcopy(LAYER_CFG), num_cp=1)

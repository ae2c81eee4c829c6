"""build_module: the one way sub-modules are built, and every sub-module swappable by type=."""
import copy

import pytest
import torch
from mmcv.cnn.bricks.transformer import MultiheadAttention

from mmdet.models.layers.transformer import DetrTransformerEncoderLayer
from mmdet.registry import MODELS
from mmdet_ddetr.models.efficient import LeanMultiheadAttention
from mmdet_ddetr.models.common import build_module
from tests.conftest import build_model, small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg


def test_default_type_defaults_and_no_mutation():
    cfg = dict(embed_dims=8, num_heads=2, batch_first=True)
    before = copy.deepcopy(cfg)
    attn = build_module(cfg, 'LeanMultiheadAttention', num_heads=4)
    assert type(attn) is LeanMultiheadAttention
    assert attn.num_heads == 2  # the config wins over the parent's default
    assert cfg == before
    attn = build_module(dict(cfg, type='MultiheadAttention'), 'LeanMultiheadAttention')
    assert type(attn) is MultiheadAttention
    with pytest.raises(KeyError, match='NoSuchLayer'):
        build_module(dict(type='NoSuchLayer'), 'LeanMultiheadAttention')


def test_ddetr_decoder_self_attention_follows_its_type():
    cfg = small_ddetr_cfg()
    cfg['decoder']['layer_cfg']['self_attn_cfg']['type'] = 'MultiheadAttention'
    plain, lean = build_model(cfg), build_model(small_ddetr_cfg())
    for layer in plain.decoder.layers:
        assert type(layer.self_attn) is MultiheadAttention
    assert all(type(layer.self_attn) is LeanMultiheadAttention for layer in lean.decoder.layers)
    # same keys and the same seeded weights: the lean attention is a drop-in replacement
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in lean.state_dict().items()}
    for key, value in lean.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key]), key


@MODELS.register_module(name='PlainDetrEncoderLayerForTest', force=True)
class PlainDetrEncoderLayer(DetrTransformerEncoderLayer):
    """mmdet's DETR encoder layer (not registered by mmdet itself)."""


@pytest.mark.parametrize('multi_scale', [False, True])
def test_smca_encoder_layers_follow_their_type(multi_scale):
    cfg = small_smca_cfg(multi_scale=multi_scale)
    cfg['encoder']['layer_cfg']['type'] = 'PlainDetrEncoderLayerForTest'
    model = build_model(cfg)
    assert all(type(layer) is PlainDetrEncoderLayer for layer in model.encoder.layers)
    assert all(type(layer.self_attn) is MultiheadAttention for layer in model.encoder.layers)

"""build_module: the one way sub-modules are built, and every sub-module swappable by type=."""
import copy

import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN, MultiheadAttention
from mmengine.config import Config
from torch import nn

from mmdet.models.layers.transformer import DetrTransformerEncoderLayer
from mmdet.registry import MODELS
from mmdet_ddetr.models.common import build_module
from mmdet_ddetr.models.efficient import (FastDropout, FastDropoutMSDeformAttention,
                                          LeanMultiheadAttention)
from tests.conftest import REPO, build_model, small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg
from tests.variants import SMALL_VARIANTS


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
    cfg['decoder']['layer_cfg']['self_attn_cfg']['type'] = 'LeanMultiheadAttention'
    lean, plain = build_model(cfg), build_model(small_ddetr_cfg())
    assert all(type(layer.self_attn) is MultiheadAttention for layer in plain.decoder.layers)
    assert all(type(layer.self_attn) is LeanMultiheadAttention for layer in lean.decoder.layers)
    # same keys and the same seeded weights: the lean attention is a drop-in replacement
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in lean.state_dict().items()}
    for key, value in lean.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key]), key


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_defaults_are_the_reference_layers(variant):
    """What runs is what the config says: without a ``type`` every attention is mmcv's
    MultiheadAttention (or our MSDeformAttention), every FFN mmcv's FFN and every dropout
    torch's, none of the CPU speed devices of models/efficient."""
    model = build_model(SMALL_VARIANTS[variant]())
    attentions = [m for m in model.modules() if isinstance(m, MultiheadAttention)]
    ffns = [m for m in model.modules() if isinstance(m, FFN)]
    assert attentions and ffns
    assert all(type(m) is MultiheadAttention for m in attentions)
    assert all(type(m) is FFN for m in ffns)
    assert all(type(m) is not FastDropoutMSDeformAttention for m in model.modules())
    assert not any(isinstance(m, FastDropout) for m in model.modules())
    assert any(isinstance(m, nn.Dropout) for m in model.modules())


def test_quickstart_configs_name_the_cpu_speed_attention():
    """The opt-in CPU speed attention is selected by name in the CPU quickstart configs."""
    for path, parts in (
            ('configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py',
             ('decoder.self_attn', )),
            ('configs/smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py',
             ('encoder.self_attn', 'decoder.self_attn', 'decoder.cross_attn'))):
        model = Config.fromfile(str(REPO / path), import_custom_modules=False).model
        for part in parts:
            coder, attn = part.split('.')
            assert model[coder]['layer_cfg'][f'{attn}_cfg']['type'] == \
                'LeanMultiheadAttention', (path, part)


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

"""Every SMCA config builds its model (backbone weights are never downloaded)."""
from pathlib import Path

import pytest
import torch
from mmengine.config import Config

from mmdet.registry import MODELS
from tests.conftest import REPO

CONFIGS = sorted((REPO / 'configs' / 'smca_detr').glob('*.py'))


def test_expected_configs_exist():
    names = {p.name for p in CONFIGS}
    for name in ('smca-detr_r50_8xb2-50e_coco.py', 'smca-detr_r50_8xb2-108e_coco.py',
                 'smca-detr-ms_r50_8xb2-50e_coco.py', 'smca-detr_r101_8xb2-50e_coco.py'):
        assert name in names


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.name)
def test_recipe(path: Path):
    """The training recipe of every SMCA config (tests/configs/test_configs_build.py builds
    every config's model)."""
    cfg = Config.fromfile(str(path))
    assert cfg.model.type in ('SMCADETR', 'SMCAMultiScaleDETR')
    for key in ('optim_wrapper', 'train_cfg', 'param_scheduler', 'train_dataloader',
                'val_evaluator'):
        assert key in cfg, f'{path.name} lacks {key}'
    if 'coco' in path.name:
        assert cfg.optim_wrapper.optimizer.lr == 1e-4
        assert cfg.optim_wrapper.clip_grad.max_norm == 0.1
        assert cfg.optim_wrapper.paramwise_cfg.custom_keys.backbone.lr_mult == 0.1
        assert cfg.model.num_queries == 300
    if '-ms_' in path.name:
        assert tuple(cfg.model.decoder.feat_strides) == (16, 32, 64)
        assert tuple(cfg.model.encoder.layer_types) == ('intra', 'intra', 'multi', 'intra',
                                                        'intra')
        assert cfg.model.encoder.layer_cfg.ffn_cfg.feedforward_channels == 1024


def test_paper_defaults():
    cfg = Config.fromfile(str(REPO / 'configs/smca_detr/smca-detr_r50_8xb2-50e_coco.py'))
    cfg.model.backbone.init_cfg = None
    model = MODELS.build(cfg.model)
    layer = model.decoder.layers[0]
    assert layer.gaussian_prior.scale_type == 'head_xy' and layer.gaussian_prior.smooth == 8
    assert layer.ffn.layers[0][0].out_features == 2048
    assert model.bbox_head.cls_out_channels == 81
    assert cfg.param_scheduler[0].milestones == [40] and cfg.train_cfg.max_epochs == 50
    r101 = Config.fromfile(str(REPO / 'configs/smca_detr/smca-detr_r101_8xb2-50e_coco.py'))
    assert r101.model.backbone.depth == 101 and r101.model.type == 'SMCADETR'
    e108 = Config.fromfile(str(REPO / 'configs/smca_detr/smca-detr_r50_8xb2-108e_coco.py'))
    assert e108.train_cfg.max_epochs == 108
    assert torch.nn.Module in type(model).__mro__


def test_layers_and_prior_are_swappable_by_config():
    """The decoder builds its layers and each layer its prior from the registry."""
    from mmdet_ddetr.models.smca_detr import SMCAGaussianPrior, SMCATransformerDecoderLayer
    from tests.models.smca_detr.common import small_smca_cfg

    @MODELS.register_module(name='SMCATestLayer', force=True)
    class _Layer(SMCATransformerDecoderLayer):
        pass

    @MODELS.register_module(name='SMCATestPrior', force=True)
    class _Prior(SMCAGaussianPrior):
        pass

    cfg = small_smca_cfg()
    cfg['decoder']['layer_cfg']['type'] = 'SMCATestLayer'
    cfg['decoder']['layer_cfg']['gaussian_prior_cfg']['type'] = 'SMCATestPrior'
    model = MODELS.build(cfg)
    assert all(type(layer) is _Layer for layer in model.decoder.layers)
    assert all(type(layer.gaussian_prior) is _Prior for layer in model.decoder.layers)


def test_feat_level_picks_the_neck_output_that_feeds_the_transformer():
    """With an FPN neck, feat_level=0 runs SMCA on the finest map (P3 of C3-C5); the Gaussian
    grid follows that map; an out-of-range level fails at build time."""
    from tests.conftest import make_batch
    from tests.models.smca_detr.common import small_smca_cfg

    cfg = small_smca_cfg()
    cfg['backbone'].update(out_indices=(1, 2, 3))
    cfg['neck'] = dict(type='FPN', in_channels=[128, 256, 512], out_channels=32, num_outs=3)
    batch = make_batch([(96, 128)], num_classes=3)
    shapes = {}
    for level, stride in ((0, 8), (-1, 32)):
        model = MODELS.build(dict(cfg, feat_level=level))
        model.init_weights()
        feats = model.extract_feat(batch['inputs'])
        _, decoder_inputs = model.pre_transformer(feats, batch['data_samples'])
        shapes[level] = decoder_inputs['spatial_shape']
        assert shapes[level] == (96 // stride, 128 // stride)
        losses = model.loss(batch['inputs'], batch['data_samples'])
        assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))
    with pytest.raises(ValueError, match=r'feat_level=3 but the neck returns 3 map'):
        MODELS.build(dict(cfg, feat_level=3))

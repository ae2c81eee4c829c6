"""A detector of this package with another head, or its head in mmdet's detector, fails when
the model is built, naming the type to use (mmdet_ddetr/models/common/build_checks.py)."""
import pytest
import torch

from mmdet.registry import MODELS
from tests.conftest import build_model, make_batch, small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg


@pytest.mark.parametrize('two_stage', [False, True])
def test_ddetr_with_mmdets_head_fails_at_build(two_stage):
    """Failed before: built, and trained with mmdet's head (single-stage), or a bare
    "DETRHead.__init__() got an unexpected keyword argument 'enc_cls_channels'" (two-stage)."""
    cfg = small_ddetr_cfg(with_box_refine=two_stage, as_two_stage=two_stage)
    cfg['bbox_head']['type'] = 'DeformableDETRHead'
    with pytest.raises(TypeError, match=r"DDETR needs bbox_head=dict\(type='DDETRHead'.*got "
                                        r"'DeformableDETRHead' from mmdet.*type='DeformableDETR'"):
        MODELS.build(cfg)


@pytest.mark.parametrize('two_stage', [False, True])
def test_our_head_in_mmdets_deformable_detr_fails_at_build(two_stage):
    """Failed before: built, then "mat1 and mat2 shapes cannot be multiplied" at the first
    forward (mmdet's detector leaves the head at 256 channels)."""
    cfg = small_ddetr_cfg(with_box_refine=two_stage, as_two_stage=two_stage)
    cfg['type'] = 'DeformableDETR'
    cfg.pop('proposal_generator')
    with pytest.raises(TypeError, match="DDETRHead got no embed_dims: DDETR sets embed_dims.*"
                                        "head of type='DDETR'"):
        MODELS.build(cfg)


def test_our_head_in_mmdets_deformable_detr_with_its_width_still_works():
    """The check refuses what cannot fit, not a working pair: DDETRHead is a
    DeformableDETRHead, and given the transformer's width it trains in mmdet's detector."""
    cfg = small_ddetr_cfg()
    cfg['type'] = 'DeformableDETR'
    cfg.pop('proposal_generator')
    cfg['bbox_head']['embed_dims'] = 32
    model = build_model(cfg).train()
    batch = make_batch([(64, 64)])
    losses = model.loss(batch['inputs'], batch['data_samples'])
    assert torch.isfinite(sum(v for k, v in losses.items() if 'loss' in k))


@pytest.mark.parametrize('multi_scale', [False, True])
def test_smca_with_mmdets_detr_head_fails_at_build(multi_scale):
    """Failed before: built, then "DETRHead.loss() got an unexpected keyword argument
    'references'" at the first forward."""
    cfg = small_smca_cfg(multi_scale=multi_scale)
    cfg['bbox_head']['type'] = 'DETRHead'
    cfg['bbox_head'].pop('with_no_object_logit')
    name = 'SMCAMultiScaleDETR' if multi_scale else 'SMCADETR'
    with pytest.raises(TypeError, match=rf"{name} needs bbox_head=dict\(type='SMCAHead'.*"
                                        r"got 'DETRHead' from mmdet.*type='DETR'"):
        MODELS.build(cfg)


def test_smca_head_with_a_detr_config_names_its_detectors():
    """mmdet's DETR configs use a softmax loss, which SMCAHead refuses at build."""
    head = dict(type='SMCAHead', num_classes=3, embed_dims=32,
                loss_cls=dict(type='CrossEntropyLoss', bg_cls_weight=0.1, use_sigmoid=False))
    with pytest.raises(ValueError, match="head of type='SMCADETR' / 'SMCAMultiScaleDETR'"):
        MODELS.build(head)


def test_smca_head_with_a_sigmoid_loss_in_mmdets_detr_names_its_detectors():
    """The one mix a build cannot see (mmdet's DETR passes nothing SMCADETR does not): the
    first forward names the detectors instead of a TypeError about a missing argument."""
    cfg = small_smca_cfg()
    cfg['type'] = 'DETR'
    cfg['encoder'] = dict(num_layers=1, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=32, num_heads=4),
        ffn_cfg=dict(embed_dims=32, feedforward_channels=64)))
    cfg['decoder'] = dict(num_layers=1, return_intermediate=True, layer_cfg=dict(
        self_attn_cfg=dict(embed_dims=32, num_heads=4),
        cross_attn_cfg=dict(embed_dims=32, num_heads=4),
        ffn_cfg=dict(embed_dims=32, feedforward_channels=64)))
    model = build_model(cfg)
    batch = make_batch([(64, 64)])
    with pytest.raises(TypeError, match="use it with type='SMCADETR' or 'SMCAMultiScaleDETR'"):
        model.loss(batch['inputs'], batch['data_samples'])

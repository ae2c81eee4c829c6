"""base.py: the Gaussian centre's stride, derived from the map, checked when configured, official
rule kept (issue 13)."""
import copy

import pytest
import torch

from mmdet.registry import MODELS
from mmdet_ddetr.models.smca_detr.base import check_stride_setting, derive_stride, resolve_stride
from tests.conftest import build_model, make_batch
from tests.models.smca_detr.common import small_smca_cfg


@pytest.mark.parametrize('input_hw, feat_hw, stride', [
    ((128, 128), (16, 16), 8),
    ((100, 100), (4, 4), 32),  # ceil(100 / 32) = 4; 100 / 4 = 25 is not the stride
    ((129, 100), (17, 13), 8),
    ((800, 1333), (25, 42), 32),
    ((20, 300), (1, 10), 32),  # a one-cell axis only bounds the stride from below
    ((64, 64), (1, 1), 64),
])
def test_derive_stride(input_hw, feat_hw, stride):
    assert derive_stride(input_hw, feat_hw) == stride
    ref = torch.zeros((), dtype=torch.float64)
    assert resolve_stride('auto', input_hw, feat_hw, ref) == stride


def test_a_map_no_stride_explains_is_an_error():
    with pytest.raises(ValueError, match='cannot derive the feature stride.*10x16'):
        derive_stride((128, 128), (10, 16))


def test_configured_stride_is_checked_and_official_is_not():
    ref = torch.zeros(())
    assert resolve_stride(16.0, (128, 96), (8, 6), ref) == 16.0
    with pytest.raises(ValueError, match=r"decoder.feat_stride=32 contradicts.*128x128 padded "
                       r"input gave a 16x16 map \(stride 8\).*'auto'"):
        resolve_stride(32.0, (128, 128), (16, 16), ref)
    assert resolve_stride('official', (128, 128), (16, 16), ref) == 32.0


@pytest.mark.parametrize('bad', ['fixed', 0, -8, True, None])
def test_bad_settings_fail_at_build_time(bad):
    with pytest.raises(ValueError, match='feat_stride'):
        check_stride_setting(bad, 'decoder.feat_stride')


def _run(model, batch):
    """Centre logits (decoder) and the centres in cells handed to the layers."""
    seen = {}
    hooks = [
        model.decoder.ref_point_head.register_forward_hook(
            lambda _m, _a, out: seen.update(logits=out)),
        model.decoder.layers[0].register_forward_pre_hook(
            lambda _m, _a, kwargs: seen.update(centres=kwargs['centres']), with_kwargs=True)
    ]
    model.eval()
    try:
        with torch.no_grad():
            model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
    finally:
        for h in hooks:
            h.remove()
    return seen['logits'], seen['centres']


def test_auto_follows_the_level_and_a_wrong_stride_fails_loudly():
    # The small config reads C5 (stride 32); move it to C4 (stride 16) as a user would.
    cfg = small_smca_cfg()
    cfg['backbone'].update(num_stages=3, strides=(1, 2, 2), dilations=(1, 1, 1),
                           out_indices=(2, ))
    cfg['neck']['in_channels'] = [256]
    assert cfg['decoder']['feat_stride'] == 'auto'  # the shipped default
    batch = make_batch([(96, 128), (80, 112)])
    model = build_model(cfg)
    logits, centres = _run(model, batch)
    img_wh = torch.tensor([[128., 96.], [112., 80.]])
    torch.testing.assert_close(centres, logits.sigmoid() * img_wh[:, None] / 16,
                               rtol=0, atol=0)

    cfg['decoder']['feat_stride'] = 32  # the official rule, now wrong for C4
    with pytest.raises(ValueError, match='decoder.feat_stride=32 contradicts.*stride 16'):
        _run(build_model(cfg), batch)
    cfg['decoder']['feat_stride'] = 'official'  # explicit: the official code's fixed 32
    logits, centres = _run(build_model(cfg), batch)
    torch.testing.assert_close(centres, logits.sigmoid() * img_wh[:, None] / 32,
                               rtol=0, atol=0)


def test_multi_scale_auto_equals_the_configured_strides():
    batch = make_batch([(96, 128), (80, 112)])
    per_setting = {}
    for setting in ['auto', (16, 32, 64)]:
        cfg = small_smca_cfg(multi_scale=True)
        cfg['decoder']['feat_strides'] = setting
        torch.manual_seed(0)
        per_setting[str(setting)] = _run(build_model(cfg), batch)
    (logits_a, centres_a), (logits_b, centres_b) = per_setting.values()
    torch.testing.assert_close(logits_a, logits_b, rtol=0, atol=0)
    for a, b in zip(centres_a, centres_b):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    cfg['decoder']['feat_strides'] = (16, 32, 32)
    with pytest.raises(ValueError, match=r'decoder.feat_strides\[2\]=32 contradicts'):
        _run(build_model(cfg), batch)

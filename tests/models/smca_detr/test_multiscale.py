"""Multi-scale SMCA end to end: shapes, ablation switches, batched == per-image."""
import pytest
import torch

from mmdet_ddetr.models.smca_detr import SMCAScaleSelection
from tests.conftest import build_model, make_batch
from tests.models.smca_detr.common import small_smca_cfg


def _randomise_selection(model):
    """Make alpha depend strongly on the query (it starts uniform)."""
    g = torch.Generator().manual_seed(3)
    for m in model.modules():
        if isinstance(m, SMCAScaleSelection) and m.fc is not None:
            with torch.no_grad():
                m.fc.weight.copy_(torch.randn(m.fc.weight.shape, generator=g))


def test_batched_equals_per_image():
    """Scale selection is per query and per image: image 0's alpha must not leak into image 1
    (the official zip code uses image 0's alpha for the whole batch)."""
    model = build_model(small_smca_cfg(multi_scale=True)).double().eval()
    _randomise_selection(model)
    batch = make_batch([(96, 96), (96, 96)], seed=4)
    inputs = model.data_preprocessor(batch, False)
    x = inputs['inputs'].double()
    samples = inputs['data_samples']
    with torch.no_grad():
        cls, boxes = model._forward(x, samples)
        for i in range(2):
            cls_i, boxes_i = model._forward(x[i:i + 1], samples[i:i + 1])
            torch.testing.assert_close(cls_i[:, 0], cls[:, i], rtol=1e-10, atol=1e-10)
            torch.testing.assert_close(boxes_i[:, 0], boxes[:, i], rtol=1e-10, atol=1e-10)
    assert not torch.allclose(cls[:, 0], cls[:, 1])


@pytest.mark.parametrize('kw', [
    dict(),
    dict(shared_heads=True),
    dict(scale_type='fixed'),
    dict(scale_selection=False),
    dict(enc_layer_types=('intra', 'intra', 'multi', 'intra', 'intra')),
])
def test_ablation_switches_train_and_predict(kw):
    model = build_model(small_smca_cfg(multi_scale=True, **kw))
    batch = make_batch([(96, 80), (64, 96)], boxes_per_image=[2, 0], seed=1)
    data = model.data_preprocessor(batch, True)
    model.train()
    losses = model.loss(data['inputs'], data['data_samples'])
    total = sum(v for k, v in losses.items() if 'loss' in k)
    total.backward()
    assert torch.isfinite(total)
    assert set(losses) >= {'loss_cls', 'loss_bbox', 'loss_iou', 'd0.loss_cls'}
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(batch, False)
        results = model.predict(data['inputs'], data['data_samples'])
    assert len(results) == 2
    assert results[0].pred_instances.bboxes.shape[1] == 4
    assert int(results[0].pred_instances.labels.max()) < 3  # no-object slot never predicted


def test_single_and_multi_scale_are_siblings():
    """Multi-scale SMCA shares only the bases with the single-scale model: no feat_level (one
    map only makes sense for single scale), one prior per scale listed by priors()."""
    from mmdet.registry import MODELS
    from mmdet_ddetr.models.smca_detr import (SMCADecoderLayerBase, SMCADETR, SMCADETRBase,
                                              SMCAMultiScaleDETR, SMCATransformerDecoderLayer)
    assert issubclass(SMCAMultiScaleDETR, SMCADETRBase) and not issubclass(SMCAMultiScaleDETR,
                                                                           SMCADETR)
    with pytest.raises(TypeError, match='feat_level'):
        MODELS.build(dict(small_smca_cfg(multi_scale=True), feat_level=0))
    layers = {ms: build_model(small_smca_cfg(multi_scale=ms)).decoder.layers[0]
              for ms in (False, True)}
    assert isinstance(layers[True], SMCADecoderLayerBase)
    assert not isinstance(layers[True], SMCATransformerDecoderLayer)
    assert layers[False].priors() == [layers[False].gaussian_prior]
    assert layers[True].priors() == list(layers[True].gaussian_priors)
    assert len(layers[True].priors()) == 3

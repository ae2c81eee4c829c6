"""Single-scale SMCA equals the official code (gaopengcuhk/SMCA-DETR e4df3ab) on the shared
fixture: outputs, aux outputs, Gaussian priors, losses, matchings, detections."""
import pytest
import torch

from mmdet_ddetr.parity.smca import FAMILY, build_converted_model, data_samples
from tests.conftest import official_fixture

SMCA_FIXTURES = ['smca_single_scale.pt']


@pytest.fixture(scope='module', params=SMCA_FIXTURES)
def fixture(request):
    return dict(official_fixture(request.param), _name=request.param)


def test_float64_parity(fixture, float64_diffs):
    assert fixture['meta']['family'] == FAMILY
    diffs = float64_diffs[fixture['_name']]
    # every stored quantity is compared
    for key in ('pred_logits', 'pred_boxes', 'aux_outputs.0.pred_logits', 'losses.loss_ce',
                'losses_alt.loss_giou_0', 'matching.final', 'matching_alt.aux_0',
                'debug.gaussian.1', 'postprocess.1.boxes', 'ref_point_logits'):
        assert key in diffs
    bad = {k: v for k, v in diffs.items() if not v <= 1e-9}
    assert not bad, f'differences above 1e-9: {bad}'


def test_float32_run_within_official_fp32_spread(fixture):
    model = build_converted_model(fixture).float()
    feats = tuple(f.float() for f in fixture['inputs']['features'])
    with torch.no_grad():
        head_inputs = model.forward_transformer(model.neck(feats), data_samples(fixture))
        cls, boxes = model.bbox_head(**head_inputs)
    torch.testing.assert_close(cls[-1].double(), fixture['outputs']['pred_logits'],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(boxes[-1].double(), fixture['outputs']['pred_boxes'],
                               atol=1e-5, rtol=1e-4)

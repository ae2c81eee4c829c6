"""Deformable DETR equals the official implementation (fixtures in tests/data/official).

In float64 with the official float32 islands reproduced, every output, loss and detection must
agree to 1e-9 (the fixture README: "can match to ~1e-12"), and every Hungarian matching and
two-stage top-k selection must be identical. The float64 checks run in the checker's own
process (tests/parity/conftest.py).
"""
import pytest
import torch

from mmdet_ddetr.parity.ddetr import build_converted_model, data_samples
from tests.conftest import official_fixture

DDETR_FIXTURES = ['ddetr_plain.pt', 'ddetr_refine.pt', 'ddetr_refine_twostage.pt']


@pytest.mark.parametrize('name', DDETR_FIXTURES)
def test_float64_parity(name, float64_diffs):
    fixture = official_fixture(name)
    diffs = float64_diffs[name]
    # every stored quantity is compared
    outputs = fixture['outputs']
    expected = {'pred_logits', 'pred_boxes', 'init_reference', 'inter_references', 'hs_ch0to15',
                'matching.final', 'matching_alt.final', 'postprocess.0.boxes'}
    for i in range(len(outputs['aux_outputs'])):
        expected |= {f'aux_outputs.{i}.pred_logits', f'aux_outputs.{i}.pred_boxes',
                     f'matching.aux_{i}'}
    for suffix in ('', '_alt'):
        expected |= {f'losses{suffix}.{k}' for k in fixture['losses' + suffix]
                     if k.startswith('loss_')}
    if 'enc_outputs' in outputs:
        expected |= {'enc_outputs.pred_logits', 'enc_outputs.pred_boxes', 'enc_topk_proposals',
                     'matching.enc'}
    assert expected <= set(diffs), f'not compared: {sorted(expected - set(diffs))}'
    bad = {k: v for k, v in diffs.items() if not v <= 1e-9}
    assert not bad, f'{name}: differences above 1e-9: {bad}'


@pytest.mark.parametrize('name', DDETR_FIXTURES)
def test_float32_parity(name):
    """A float32 run stays within the fp32-vs-fp64 spread the fixture README measured."""
    fixture = official_fixture(name)
    model = build_converted_model(fixture).float()
    feats = tuple(f.float() for f in fixture['inputs']['features'])
    with torch.no_grad():
        head_inputs = model.forward_transformer(model.neck(feats), data_samples(fixture))
        cls, boxes = model.bbox_head(head_inputs['hidden_states'], head_inputs['references'])
    torch.testing.assert_close(cls[-1].double(), fixture['outputs']['pred_logits'],
                               atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(boxes[-1].double(), fixture['outputs']['pred_boxes'],
                               atol=1e-5, rtol=1e-4)

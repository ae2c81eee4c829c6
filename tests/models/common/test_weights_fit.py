"""Weights that do not fit the detector are an error wherever they are loaded for results;
fine-tuning loads partially and says what it left out; no parameter is ever uninitialised."""
import copy

import pytest
import torch
from mmengine.runner import load_checkpoint
from torch.overrides import TorchFunctionMode

from mmdet.registry import MODELS
from mmdet_ddetr.models.common import WeightsMismatchError, weights_loading_mode
from tests.conftest import build_model, small_ddetr_cfg
from tests.variants import SMALL_VARIANTS


def _save(state_dict, path):
    torch.save({'state_dict': state_dict, 'meta': {}}, path)
    return str(path)


@pytest.fixture(scope='module')
def plain():
    return build_model(small_ddetr_cfg())


def test_own_weights_load(plain, tmp_path):
    model = MODELS.build(small_ddetr_cfg())
    load_checkpoint(model, _save(plain.state_dict(), tmp_path / 'ok.pth'), map_location='cpu')
    for key, value in model.state_dict().items():
        assert torch.equal(value, plain.state_dict()[key]), key


def test_another_variant_is_an_error_listing_the_keys(plain, tmp_path):
    """mmengine's load_checkpoint (what init_detector, DetInferencer and tools/test.py use)
    only logged these and evaluated a partly random model."""
    refine = MODELS.build(small_ddetr_cfg(with_box_refine=True, as_two_stage=True))
    before = copy.deepcopy(refine.state_dict())
    with pytest.raises(WeightsMismatchError) as info:
        load_checkpoint(refine, _save(plain.state_dict(), tmp_path / 'plain.pth'),
                        map_location='cpu')
    message = str(info.value)
    assert 'does not fit DDETR' in message and 'missing (' in message
    assert 'unexpected (' in message and 'with_box_refine, as_two_stage' in message
    # Nothing was copied before the error.
    assert all(torch.equal(v, before[k]) for k, v in refine.state_dict().items())


def test_renamed_keys_name_the_converter(plain, tmp_path):
    renamed = {f'model.{k}': v for k, v in plain.state_dict().items()}
    model = MODELS.build(small_ddetr_cfg())
    with pytest.raises(WeightsMismatchError, match='None of its tensors.*ddetr_to_mmdet_ddetr'):
        load_checkpoint(model, _save(renamed, tmp_path / 'renamed.pth'), map_location='cpu')


def test_other_class_count_names_the_shapes(plain, tmp_path):
    seven = MODELS.build(small_ddetr_cfg(num_classes=7))
    with pytest.raises(WeightsMismatchError, match=r'of another shape .*\(7, 32\) in the model'):
        load_checkpoint(seven, _save(plain.state_dict(), tmp_path / 'p.pth'), map_location='cpu')


def test_init_detector_refuses_a_foreign_checkpoint(plain, tmp_path):
    from mmengine.config import Config

    from mmdet.apis import init_detector
    cfg = Config(dict(model=small_ddetr_cfg(num_classes=7), default_scope='mmdet'))
    path = _save(plain.state_dict(), tmp_path / 'p.pth')
    with pytest.raises(WeightsMismatchError):
        init_detector(cfg, path, device='cpu')


def test_partial_loading_reports_and_refuses_nothing_useful(plain, tmp_path, monkeypatch):
    """load_from for fine-tuning: what fits loads, the rest is reported by group."""
    from mmdet_ddetr.models.common import weights_fit
    messages = []
    monkeypatch.setattr(weights_fit, 'print_log', lambda msg, **kw: messages.append(msg))
    seven = MODELS.build(small_ddetr_cfg(num_classes=7))
    path = _save(plain.state_dict(), tmp_path / 'p.pth')
    with weights_loading_mode(seven, 'partial', path):
        load_checkpoint(seven, path, map_location='cpu')
    assert len(messages) == 1 and 'loaded' in messages[0]
    assert 'bbox_head.cls_branches' in messages[0]  # the 7-class classifier stays as built
    key = 'backbone.conv1.weight'
    assert torch.equal(seven.state_dict()[key], plain.state_dict()[key])
    junk = _save({'something.else': torch.zeros(3)}, tmp_path / 'junk.pth')
    with weights_loading_mode(seven, 'partial', junk), \
            pytest.raises(WeightsMismatchError, match=r'only 0 of the \d+ tensors'):
        load_checkpoint(seven, junk, map_location='cpu')


def test_resume_mode_says_the_model_differs(plain, tmp_path):
    refine = MODELS.build(small_ddetr_cfg(with_box_refine=True, as_two_stage=True))
    with weights_loading_mode(refine, 'resume', 'epoch_3.pth'), \
            pytest.raises(WeightsMismatchError, match='cannot be resumed: it was written by a '
                                                      'different model'):
        refine.load_state_dict(plain.state_dict())


class _NaNEmpty(TorchFunctionMode):
    """``torch.empty`` and ``Tensor.new_empty`` return NaN-filled memory: a parameter that no
    init overwrites is then visibly uninitialised (real uninitialised memory is often 0)."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func in (torch.empty, torch.Tensor.new_empty) and out.is_floating_point():
            with torch.no_grad():
                out.fill_(float('nan'))
        return out


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_every_parameter_is_defined_before_any_loading(variant):
    """Built without init_weights, as mmdet's init_detector does before loading: all finite."""
    with _NaNEmpty():
        model = MODELS.build(SMALL_VARIANTS[variant]())
    bad = [n for n, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert not bad, f'uninitialised parameters: {bad}'


def test_the_nan_probe_sees_torch_empty():
    with _NaNEmpty():
        p = torch.nn.Parameter(torch.empty(2, 3))
    assert torch.isnan(p).all()

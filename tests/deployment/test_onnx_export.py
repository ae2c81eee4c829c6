"""ONNX export of every detector variant at a small size, verified with ONNX Runtime."""
import pytest
import torch

from mmdet_ddetr.deployment import (ExportableDetector, UnsupportedExport, compare_detections,
                                    export_onnx, pytorch_detections, sample_images, verify_onnx)
from tests.conftest import build_model
from tests.tool_helpers import load_tool
from tests.variants import SMALL_VARIANTS


def _detector(variant: str) -> torch.nn.Module:
    return build_model(SMALL_VARIANTS[variant]()).eval()


@pytest.mark.parametrize('variant', list(SMALL_VARIANTS))
def test_wrapper_equals_the_detectors_own_predict(variant):
    """The batched post-processing in the graph is the head's per-image predict."""
    detector = _detector(variant)
    images = sample_images(2, (96, 128))
    with torch.no_grad():
        ours = ExportableDetector(detector)(images)
    reference = pytorch_detections(detector, images)
    k = ours[1].shape[1]
    assert ours[0].shape == (2, k, 4) and ours[2].shape == (2, k) and k > 0
    # float32: a few units in the last place of each value (boxes are in pixels, ~1e2), not
    # an absolute bound (two float32 steps at 82 px are 1.5e-5).
    for mine, theirs in zip(ours, reference):
        torch.testing.assert_close(mine, theirs, rtol=1e-6, atol=1e-6)


#: Exporting and running the two refining variants takes ~50 s each on 2 cores (make test was
#: 12 min 50 s): they run in make test-slow, which CI runs too; the wrapper test above checks
#: all six variants' graphs against predict in make test.
HEAVY_EXPORTS = ('ddetr-refine', 'ddetr-refine-twostage')


@pytest.mark.parametrize('variant', [
    pytest.param(v, marks=pytest.mark.slow) if v in HEAVY_EXPORTS else v for v in SMALL_VARIANTS])
def test_export_and_verify_with_onnxruntime(variant, tmp_path):
    """DDETR variants: dynamic batch and size, verified at another batch and size than the
    traced example. SMCA: fixed size (its --dynamic is refused, see below)."""
    import onnx
    detector = _detector(variant)
    out = tmp_path / f'{variant}.onnx'
    ddetr = variant.startswith('ddetr')
    types = [type(m) for m in detector.modules()]
    info = export_onnx(detector, out, shape=(96, 128), batch_size=1, dynamic=ddetr)
    assert [type(m) for m in detector.modules()] == types  # fused_attention put mmcv's back
    model = onnx.load(str(out))
    # Standard ONNX only: no custom domain anywhere.
    assert {n.domain for n in model.graph.node} <= {'', 'ai.onnx'}
    if ddetr:
        levels = 1 if variant == 'ddetr-single-scale' else 4
        # 2 encoder + 2 decoder layers, one GridSample per level.
        assert info['nodes'].get('GridSample', 0) == 4 * levels
        assert info['dynamic_axes'] == ['batch', 'height', 'width']
        result = verify_onnx(detector, out, (128, 96), batch_size=3)
    else:
        assert info['dynamic_axes'] == []
        result = verify_onnx(detector, out, (96, 128), batch_size=1)
    assert result['passed'], result


def test_smca_dynamic_is_refused_by_name(tmp_path):
    with pytest.raises(UnsupportedExport, match='--dynamic with SMCADETR'):
        export_onnx(_detector('smca'), tmp_path / 'm.onnx', shape=(96, 128), dynamic=True)
    assert list(tmp_path.iterdir()) == []


def test_bad_opset_fails_cleanly_and_leaves_no_file(tmp_path):
    detector = _detector('ddetr')
    out = tmp_path / 'm.onnx'
    with pytest.raises(UnsupportedExport, match='opset 13'):
        export_onnx(detector, out, shape=(64, 64), opset=13)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_unsupported_detector_is_named(tmp_path):
    with pytest.raises(UnsupportedExport, match='Linear is not exportable'):
        export_onnx(torch.nn.Linear(2, 2), tmp_path / 'm.onnx', shape=(64, 64))
    assert list(tmp_path.iterdir()) == []


def test_compare_detections_aligns_swapped_near_ties():
    boxes = torch.tensor([[[0., 0., 1., 1.], [5., 5., 6., 6.]]])
    scores = torch.tensor([[0.5, 0.5]])
    labels = torch.tensor([[1, 2]])
    swapped = (boxes.flip(1), scores, labels.flip(1))
    result = compare_detections((boxes, scores, labels), swapped)
    assert result['max_abs_box'] == 0 and result['labels_equal'] == 0
    moved = (boxes + 1e-3, scores, labels)
    assert compare_detections((boxes, scores, labels), moved)['max_abs_box'] == pytest.approx(
        1e-3, abs=1e-6)


@pytest.mark.parametrize('passed', [False, True])
def test_failed_verify_leaves_no_file_under_the_final_name(tmp_path, monkeypatch, passed):
    """The export and the comparison are the real steps' stand-ins (the real ones take
    minutes); what is tested is where the file ends up."""
    tool = load_tool('tools/deployment/export_onnx.py')
    verified = []

    def fake_export(detector, path, **kwargs):
        with open(path, 'wb') as f:
            f.write(b'onnx bytes')
        return dict(dynamic_axes=[], nodes={}, export_s=0.0)

    def fake_verify(detector, path, shape, **kwargs):
        verified.append(open(path, 'rb').read())  # the file exists while it is verified
        return dict(max_abs_box=0.0 if passed else 3.0, max_abs_score=0.0, labels_equal=1.0,
                    passed=passed)

    monkeypatch.setattr(tool, 'build_detector', lambda config, checkpoint: object())
    monkeypatch.setattr(tool, 'export_onnx', fake_export)
    monkeypatch.setattr(tool, 'verify_onnx', fake_verify)
    out = tmp_path / 'model.onnx'
    config = tmp_path / 'cfg' / 'config.py'  # the tool checks that it exists; build is stubbed
    config.parent.mkdir()
    config.write_text('model = dict()\n')
    assert tool.main([str(config), '--out', str(out), '--shape', '64', '64', '--verify']) == (
        0 if passed else 1)
    assert verified == [b'onnx bytes']
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == (
        ['model.onnx'] if passed else [])

"""ONNX Runtime evaluation through a real mmengine Runner: same CocoMetric mAP and the same
detections as the PyTorch model, on a small synthetic val split."""
import pickle

import torch
from mmengine.evaluator import DumpResults
from mmengine.runner import Runner

from mmdet_ddetr.deployment import build_detector, export_onnx
from tests.models.smca_detr.test_smca_runner import _tiny_cfg, tiny_data  # noqa: F401 (fixture)


def _test(cfg, dump):
    runner = Runner.from_cfg(cfg)
    runner.test_evaluator.metrics.append(DumpResults(out_file_path=str(dump)))
    metrics = runner.test()
    with open(dump, 'rb') as f:
        return metrics, pickle.load(f)


def test_onnxruntime_map_equals_pytorch_map(tiny_data, tmp_path):  # noqa: F811
    cfg = _tiny_cfg(tiny_data, tmp_path / 'train', multi_scale=False)
    Runner.from_cfg(cfg.copy()).train()  # one short epoch: non-trivial weights
    checkpoint = str(tmp_path / 'train' / 'epoch_1.pth')

    torch_cfg = _tiny_cfg(tiny_data, tmp_path / 'torch', multi_scale=False)
    torch_cfg.load_from = checkpoint
    torch_metrics, torch_preds = _test(torch_cfg, tmp_path / 'torch.pkl')

    onnx_file = str(tmp_path / 'model.onnx')
    # The test pipeline resizes the 64x64 synthetic images to 64x64.
    export_onnx(build_detector(cfg, checkpoint), onnx_file, shape=(64, 64))
    ort_cfg = _tiny_cfg(tiny_data, tmp_path / 'ort', multi_scale=False)
    ort_cfg.model = dict(type='OrtDetectorModel', onnx_file=onnx_file)
    ort_metrics, ort_preds = _test(ort_cfg, tmp_path / 'ort.pkl')

    assert abs(ort_metrics['coco/bbox_mAP'] - torch_metrics['coco/bbox_mAP']) <= 1e-3
    assert len(ort_preds) == len(torch_preds) == 2
    for ours, ref in zip(ort_preds, torch_preds):
        assert ours['img_id'] == ref['img_id']
        for key in ('bboxes', 'scores'):
            torch.testing.assert_close(ours['pred_instances'][key], ref['pred_instances'][key],
                                       rtol=0, atol=1e-4)
        assert torch.equal(ours['pred_instances']['labels'], ref['pred_instances']['labels'])

"""The one top-k post-processing: ``predict`` (one image at a time) and the ONNX graph (one
batch) give the same detections."""
import pytest
import torch

from mmdet_ddetr.deployment import ExportableDetector
from tests.conftest import build_model, make_batch, small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg


@pytest.mark.parametrize('cfg', [small_ddetr_cfg, small_smca_cfg], ids=['ddetr', 'smca'])
def test_predict_and_export_wrapper_give_the_same_detections(cfg):
    model = build_model(cfg()).eval()
    model.bbox_head.test_cfg['max_per_img'] = 7
    images = make_batch([(48, 64), (48, 64)])['inputs'] * 50 + 100  # raw pixel scale
    wrapper = ExportableDetector(model).eval()
    with torch.no_grad():
        boxes, scores, labels = wrapper(images)
        samples = [wrapper.samples(images[i:i + 1])[0] for i in range(len(images))]
        for s in samples:
            s.set_metainfo(dict(scale_factor=(1.0, 1.0)))
        results = model.predict(wrapper.preprocess(images), samples)
    assert boxes.shape == (2, 7, 4) and labels.dtype == torch.int64
    for i, result in enumerate(results):
        torch.testing.assert_close(result.pred_instances.bboxes, boxes[i], rtol=0, atol=0)
        torch.testing.assert_close(result.pred_instances.scores, scores[i], rtol=0, atol=0)
        assert torch.equal(result.pred_instances.labels, labels[i])


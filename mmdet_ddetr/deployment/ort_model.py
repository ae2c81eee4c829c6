"""An exported ONNX file as an mmengine model, so that ``Runner.test()`` scores ONNX Runtime
with the config's own dataloader and evaluator (e.g. mmdet's ``CocoMetric``), exactly as it
scores the PyTorch model (``tools/test.py CONFIG FILE.onnx --backend onnxruntime``)."""
from typing import List, Optional, Sequence, Union

import torch
from mmengine.model import BaseModel
from mmengine.structures import InstanceData

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from .onnx_export import OrtDetector


@MODELS.register_module()
class OrtDetectorModel(BaseModel):
    """Predict with an exported detector under ONNX Runtime (CPU), one image at a time.

    Each image goes in unpadded (the file has dynamic height and width, or was exported at the
    size of the test pipeline's images); boxes come back in input pixels and are mapped to the
    original image with ``scale_factor``, as the heads do with ``rescale=True``.

    Args:
        onnx_file (str): File written by ``tools/deployment/export_onnx.py``.
        threads (int, optional): ONNX Runtime intra-op threads (default: its own choice).
    """

    def __init__(self, onnx_file: str, threads: Optional[int] = None, **kwargs) -> None:
        super().__init__(data_preprocessor=dict(type='BaseDataPreprocessor'))
        self.onnx_file = onnx_file
        self.runtime = OrtDetector(onnx_file, threads=threads)

    def forward(self, inputs, data_samples=None, mode: str = 'predict'):
        if mode != 'predict':
            raise ValueError(f'OrtDetectorModel only predicts (mode={mode!r}): '
                             'train the PyTorch model, then export it')
        return self.predict(inputs, data_samples)

    def predict(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                data_samples: List[DetDataSample]) -> List[DetDataSample]:
        """Detections of every image (``inputs``: (3, H, W) pixels each, as loaded)."""
        for image, sample in zip(inputs, data_samples):
            boxes, scores, labels = self.runtime(image[None].float().contiguous())
            boxes = boxes[0] / boxes.new_tensor(sample.scale_factor).repeat(2)
            sample.pred_instances = InstanceData(bboxes=boxes, scores=scores[0],
                                                 labels=labels[0])
        return data_samples

    def val_step(self, data: dict) -> List[DetDataSample]:
        data = self.data_preprocessor(data, False)
        return self.predict(data['inputs'], data['data_samples'])

    test_step = val_step

    def train_step(self, data, optim_wrapper):
        raise ValueError('OrtDetectorModel cannot train: train the PyTorch model, then export it')


__all__ = ['OrtDetectorModel']

"""Comparison helpers shared by the family parity checks."""
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_cxcywh_to_xyxy


def load_converted(cfg: Dict[str, Any], state_dict: Dict[str, Tensor]) -> nn.Module:
    """Build ``cfg`` and load converted official weights, every key; float64, eval mode."""
    model = MODELS.build(cfg)
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    if missing or unexpected:
        raise RuntimeError(f'converted weights do not fit the model: missing {missing}, '
                           f'unexpected {unexpected}')
    return model.double().eval()


def to_device(obj: Any, device: Union[str, torch.device]) -> Any:
    """``obj`` with every tensor inside (dicts, lists, tuples) moved to ``device``.

    On the CPU this returns the very same tensors, so the CPU parity run is unchanged.
    """
    if isinstance(obj, Tensor):
        return obj.to(device)
    if isinstance(obj, dict):
        return {k: to_device(v, device) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_device(v, device) for v in obj)
    return obj


def max_diff(a: Tensor, b: Tensor) -> float:
    """Max abs difference in float64; inf when the shapes differ."""
    a, b = a.double(), b.double()
    if a.shape != b.shape:
        return float('inf')
    return (a - b).abs().max().item() if a.numel() else 0.0


def hungarian_matching(model: nn.Module, cls_scores: Tensor, bbox_preds: Tensor,
                       samples: List[DetDataSample]) -> List[Tuple[List[int], List[int]]]:
    """(query indices, target indices) our assigner picks per image, sorted by query.

    Args:
        model (nn.Module): Detector whose ``bbox_head.assigner`` is used.
        cls_scores (Tensor): (bs, num_queries, C) logits.
        bbox_preds (Tensor): (bs, num_queries, 4) normalised (cx, cy, w, h).
        samples (list[DetDataSample]): ``img_shape`` and ``gt_instances`` per image.
    """
    pairs = []
    for i, sample in enumerate(samples):
        h, w = sample.img_shape
        boxes = bbox_cxcywh_to_xyxy(bbox_preds[i]) * bbox_preds.new_tensor([w, h, w, h])
        result = model.bbox_head.assigner.assign(
            InstanceData(scores=cls_scores[i], bboxes=boxes), sample.gt_instances,
            img_meta=sample.metainfo)
        query = torch.nonzero(result.gt_inds > 0).flatten()
        pairs.append((query.tolist(), (result.gt_inds[query] - 1).tolist()))
    return pairs


def data_samples(fixture: Dict[str, Any],
                 targets: Optional[List[Dict[str, Tensor]]] = None) -> List[DetDataSample]:
    """Image metas (and targets as pixel xyxy boxes) as mmdet's pipeline would give them.

    ``scale_factor`` maps the unpadded input size to ``postprocess.orig_target_sizes`` so
    that ``rescale=True`` gives the official PostProcess coordinates.
    """
    inputs = fixture['inputs']
    padded = tuple(inputs['padded_size'])
    orig = fixture['postprocess']['orig_target_sizes'].tolist()
    samples = []
    for i, (h, w) in enumerate(inputs['image_sizes']):
        h0, w0 = orig[i]
        sample = DetDataSample(metainfo=dict(
            img_shape=(h, w), batch_input_shape=padded, pad_shape=padded, ori_shape=(h0, w0),
            scale_factor=(w / w0, h / h0)))
        if targets is not None:
            boxes = bbox_cxcywh_to_xyxy(targets[i]['boxes'].double())
            sample.gt_instances = InstanceData(
                bboxes=boxes * boxes.new_tensor([w, h, w, h]), labels=targets[i]['labels'])
        samples.append(sample)
    return samples

"""ONNX export of every detector of this package, with ONNX Runtime verification.

Route (torch 2.13): ``torch.export.export`` of :class:`ExportableDetector` (our deformable
sampling stays one ``mmdet_ddetr::ms_deform_attn`` node), then
``run_decompositions(export_decompositions())`` turns that node into one ATen
``grid_sampler_2d`` per level, which the dynamo ONNX exporter (``torch.onnx.export(...,
dynamo=True)``, onnxscript's torchlib) writes as the standard ``GridSample`` operator
(opset >= 16). So the file needs no custom operator and runs in any ONNX runtime. We chose this
over an onnxscript ``custom_translation_table`` entry because the decomposition is the very
PyTorch function the CPU kernel runs (one implementation to trust) and keeps the level shapes
symbolic for ``--dynamic``; the TorchScript exporter (``register_custom_op_symbolic``) is
deprecated in torch 2.x.

The graph:

* input ``images`` (bs, 3, H, W) float32, raw pixel values in the channel order the data
  pipeline loads (BGR for ``LoadImageFromFile``); the data preprocessor's channel swap and
  mean/std normalisation are **inside** the graph. Images are not padded: one batch is one size.
* attention: every mmcv ``MultiheadAttention`` is exported as
  :class:`~mmdet_ddetr.models.efficient.LeanMultiheadAttention` with the same weights
  (:func:`fused_attention`; outputs equal to ~1e-13 in float64): ``nn.MultiheadAttention``'s
  head reshapes keep the traced batch size in the ONNX graph, so a ``--dynamic`` file failed at
  any other batch.
* outputs ``boxes`` (bs, k, 4) x1, y1, x2, y2 in input pixels, ``scores`` (bs, k) and
  ``labels`` (bs, k) int64: the post-processing of ``predict``
  (:func:`mmdet_ddetr.models.common.detections.topk_detections`: sigmoid, top-k over queries x
  classes, clipping to the image) for the last decoder layer; k = ``max_per_img``.
"""
import contextlib
import os
import time
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from mmcv.cnn.bricks.transformer import MultiheadAttention
from mmengine.config import Config
from mmengine.structures import InstanceData
from torch import Tensor, nn

from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from ..models.common.detections import topk_detections
from ..ops import export_decompositions
from ..utils import atomic_write

MIN_OPSET = 16  # first opset with GridSample
DEFAULT_OPSET = 18
MIN_DYNAMIC_SIDE = 65  # smallest image side of a --dynamic export
OUTPUT_NAMES = ('boxes', 'scores', 'labels')


class UnsupportedExport(ValueError):
    """The model or an export option is not supported; the message names it and the fix."""


class ExportableDetector(nn.Module):
    """Image tensor in, (boxes, scores, labels) out: what the ONNX file computes.

    Args:
        detector (nn.Module): A built detector of this package in eval mode.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        pre = detector.data_preprocessor
        if getattr(pre, 'pad_size_divisor', 1) != 1:
            raise UnsupportedExport(
                f'data_preprocessor.pad_size_divisor={pre.pad_size_divisor}: the exported graph '
                'does not pad (padding would need a mask input); set it to 1')
        if getattr(pre, 'batch_augments', None):
            raise UnsupportedExport('data_preprocessor.batch_augments are training-only; '
                                    'remove them for export')
        self.detector = detector
        self.channel_swap = bool(getattr(pre, '_channel_conversion', False))
        self.normalize = bool(getattr(pre, '_enable_normalize', False))
        if self.normalize:
            self.register_buffer('mean', pre.mean.detach().clone().view(1, -1, 1, 1), False)
            self.register_buffer('std', pre.std.detach().clone().view(1, -1, 1, 1), False)

    def preprocess(self, images: Tensor) -> Tensor:
        """The data preprocessor's per-pixel work: channel swap, then (x - mean) / std."""
        if self.channel_swap:
            images = images[:, [2, 1, 0]]
        if self.normalize:
            images = (images - self.mean) / self.std
        return images

    def samples(self, images: Tensor) -> List[DetDataSample]:
        """Data samples of an unpadded batch: every image is ``images``' size.

        DDETR reads only ``batch_input_shape`` and the common ``img_shape`` (one sample is
        enough, so the batch stays symbolic); SMCA reads one ``img_shape`` per image.
        """
        h, w = images.shape[-2:]
        count = images.shape[0] if self.needs_sample_per_image else 1
        samples = []
        for _ in range(count):
            sample = DetDataSample()
            # set_field, not set_metainfo: the latter deep-copies, which symbolic sizes
            # (torch.export with dynamic height/width) do not support.
            for key in ('img_shape', 'batch_input_shape', 'pad_shape'):
                sample.set_field((h, w), key, field_type='metainfo')
            samples.append(sample)
        return samples

    @property
    def needs_sample_per_image(self) -> bool:
        """SMCA builds its masks and Gaussian sizes image by image (fixed batch on export)."""
        from ..models.deformable_detr.detector import DDETR
        return not isinstance(self.detector, DDETR)

    def forward(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        """(bs, 3, H, W) raw pixels -> boxes (bs, k, 4), scores (bs, k), labels (bs, k)."""
        x = self.preprocess(images)
        cls_scores, bbox_preds = self.detector._forward(x, self.samples(images))[:2]
        return topk_detections(self.detector.bbox_head, cls_scores[-1], bbox_preds[-1],
                               tuple(images.shape[-2:]))


def build_detector(config: Union[str, Config], checkpoint: Optional[str] = None) -> nn.Module:
    """Detector of ``config`` in eval mode on CPU, with ``checkpoint`` or its own init."""
    from mmengine.registry import DefaultScope
    from mmengine.runner import load_checkpoint
    cfg = config if isinstance(config, Config) else Config.fromfile(config)
    if 'model' not in cfg:
        raise UnsupportedExport(f'{config} has no model: pass a model config')
    model_cfg = cfg.model.copy()
    if checkpoint is None and isinstance(model_cfg.get('backbone'), dict):
        # The model's own init, without fetching pretrained backbone weights (no downloads).
        model_cfg['backbone'] = dict(model_cfg['backbone'], init_cfg=None)
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
        model = MODELS.build(model_cfg)
    if checkpoint is None:
        model.init_weights()
    else:
        load_checkpoint(model, checkpoint, map_location='cpu', strict=True,
                        revise_keys=[(r'^module\.', '')])
    return model.eval()


def _check_supported(detector: nn.Module) -> None:
    from ..models.deformable_detr.detector import DDETR
    from ..models.smca_detr import SMCADETRBase
    if not isinstance(detector, (DDETR, SMCADETRBase)):
        raise UnsupportedExport(
            f'{type(detector).__name__} is not exportable here: export_onnx supports this '
            "package's DDETR (all variants) and SMCADETR/SMCAMultiScaleDETR")


@contextlib.contextmanager
def fused_attention(detector: nn.Module) -> Iterator[None]:
    """Run every mmcv ``MultiheadAttention`` of an eval-mode ``detector`` as
    :class:`LeanMultiheadAttention` with the same weights, and put the originals back after.

    Attention with ``kdim``/``vdim`` other than ``embed_dims`` or extra key/value biases (which
    the lean attention refuses) stays as it is.
    """
    from ..models.efficient import LeanMultiheadAttention
    swapped = []
    for parent in list(detector.modules()):
        for name, child in list(parent.named_children()):
            mha = getattr(child, 'attn', None)
            if type(child) is not MultiheadAttention or not mha._qkv_same_embed_dim or \
                    mha.bias_k is not None or mha.add_zero_attn:
                continue
            # No dropout arguments: the detector is in eval mode, where dropouts do nothing.
            lean = LeanMultiheadAttention(child.embed_dims, child.num_heads,
                                          batch_first=child.batch_first,
                                          bias=mha.in_proj_bias is not None)
            lean.load_state_dict(child.state_dict())
            lean.to(mha.in_proj_weight).train(child.training)
            setattr(parent, name, lean)
            swapped.append((parent, name, child))
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def export_onnx(detector: nn.Module, out: Union[str, Path], shape: Tuple[int, int] = (800, 1333),
                batch_size: int = 1, opset: int = DEFAULT_OPSET, dynamic: bool = False) -> Dict:
    """Export ``detector`` to ``out`` (atomically) and check it with ``onnx.checker``.

    Args:
        detector (nn.Module): Eval-mode detector (see :func:`build_detector`).
        out (str | Path): Destination ``.onnx`` file; nothing is left there on failure.
        shape (tuple[int, int]): (H, W) of the example input.
        batch_size (int): Batch of the example input.
        opset (int): ONNX opset, >= 16 (GridSample).
        dynamic (bool): Dynamic image size (and batch, for DDETR models).

    Returns:
        dict: ``export_s`` (seconds), ``dynamic_axes`` (names of the dynamic input dims),
        ``nodes`` (op type -> count).
    """
    import onnx
    _check_supported(detector)
    if opset < MIN_OPSET:
        raise UnsupportedExport(f'--opset {opset}: GridSample needs opset >= {MIN_OPSET}')
    if min(shape) < 32:
        raise UnsupportedExport(f'--shape {shape}: each side must be >= 32 pixels')
    wrapper = ExportableDetector(detector).eval()
    # torch.export specialises dimensions of size 1: a dynamic batch is traced with 2 images.
    example = sample_images(2 if dynamic and not wrapper.needs_sample_per_image else batch_size,
                            shape)
    dynamic_shapes = None
    dynamic_axes: List[str] = []
    if dynamic and wrapper.needs_sample_per_image:
        raise UnsupportedExport(
            f'--dynamic with {type(detector).__name__}: SMCA builds its masks and Gaussian '
            'grids from Python ints per image, so its graph is fixed to one size; export '
            'without --dynamic at the size you will run (--shape H W --batch-size N)')
    if dynamic:
        if min(shape) < MIN_DYNAMIC_SIDE:
            raise UnsupportedExport(f'--dynamic with --shape {shape}: the example sides must be '
                                    f'>= {MIN_DYNAMIC_SIDE}')
        # Sides >= 65 keep every level (strides up to 64) at least 2 wide: a level of size 1
        # would be specialised by the tracer.
        dims = {2: torch.export.Dim('height', min=MIN_DYNAMIC_SIDE, max=4096),
                3: torch.export.Dim('width', min=MIN_DYNAMIC_SIDE, max=4096)}
        dynamic_axes = ['height', 'width']
        if not wrapper.needs_sample_per_image:
            dims[0] = torch.export.Dim('batch', min=1, max=1024)
            dynamic_axes.insert(0, 'batch')
        dynamic_shapes = ({**dims}, )
    start = time.perf_counter()
    with torch.no_grad(), fused_attention(detector):
        program = torch.export.export(wrapper, (example, ), dynamic_shapes=dynamic_shapes)
        program = program.run_decompositions(export_decompositions())
        # optimize=False: onnxscript's graph optimizer emitted an unsorted graph (a Clip
        # before its input) for the box-refinement models; ONNX Runtime optimizes anyway.
        onnx_program = torch.onnx.export(program, opset_version=opset, dynamo=True,
                                         optimize=False,
                                         input_names=['images'],
                                         output_names=list(OUTPUT_NAMES))

    def write(tmp: str) -> None:
        onnx_program.save(tmp, external_data=False)
        # Checked before the rename: a file that fails the checker never reaches ``out``.
        onnx.checker.check_model(tmp, full_check=True)

    atomic_write(str(out), write)
    model = onnx.load(str(out))
    nodes: Dict[str, int] = {}
    for node in model.graph.node:
        nodes[node.op_type] = nodes.get(node.op_type, 0) + 1
    return dict(export_s=time.perf_counter() - start, dynamic_axes=dynamic_axes, nodes=nodes)


def sample_images(batch_size: int, shape: Tuple[int, int], seed: int = 0) -> Tensor:
    """A deterministic batch of raw-pixel images (smooth blobs on noise, values in [0, 255])."""
    g = torch.Generator().manual_seed(seed)
    h, w = shape
    coarse = torch.rand(batch_size, 3, max(h // 16, 2), max(w // 16, 2), generator=g)
    images = nn.functional.interpolate(coarse, size=(h, w), mode='bilinear', align_corners=False)
    images = images * 200 + torch.rand(batch_size, 3, h, w, generator=g) * 55
    return images.clamp(0, 255)


class OrtDetector:
    """An exported file under ONNX Runtime (CPU), called like :class:`ExportableDetector`."""

    def __init__(self, path: Union[str, Path], threads: Optional[int] = None) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options,
                                            providers=['CPUExecutionProvider'])

    def __call__(self, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        outs = self.session.run(list(OUTPUT_NAMES), {'images': images.numpy()})
        return tuple(torch.from_numpy(o) for o in outs)


def compare_detections(reference: Sequence[Tensor], candidate: Sequence[Tensor]) -> Dict:
    """Max abs differences of boxes and scores, and the fraction of equal labels.

    Top-k order can swap between two runtimes where scores tie to float rounding; boxes are
    therefore compared detection by detection after aligning each candidate detection with the
    reference detection of the same label and nearest score.
    """
    ref_boxes, ref_scores, ref_labels = (t.detach().float() for t in reference)
    boxes, scores, labels = (t.detach().float() for t in candidate)
    score_diff = (ref_scores - scores).abs().max().item()
    same = labels == ref_labels
    if bool(same.all()):
        box_diff = (ref_boxes - boxes).abs().max().item()
    else:
        # Align by (label, nearest score) per image for the swapped positions.
        aligned = boxes.clone()
        for b in range(ref_boxes.shape[0]):
            for i in torch.nonzero(~same[b]).flatten().tolist():
                cand = torch.nonzero(labels[b] == ref_labels[b, i]).flatten()
                if len(cand) == 0:
                    aligned[b, i] = float('inf')
                    continue
                j = cand[(scores[b, cand] - ref_scores[b, i]).abs().argmin()]
                aligned[b, i] = boxes[b, j]
        box_diff = (ref_boxes - aligned).abs().max().item()
    return dict(max_abs_box=box_diff, max_abs_score=score_diff,
                labels_equal=same.float().mean().item())


def verify_onnx(detector: nn.Module, path: Union[str, Path], shape: Tuple[int, int],
                batch_size: int = 1, tolerance: float = 1e-4) -> Dict:
    """ONNX Runtime vs PyTorch on :func:`sample_images`; ``passed`` if both max abs diffs of
    boxes and scores are <= ``tolerance``."""
    images = sample_images(batch_size, shape, seed=1)
    with torch.no_grad():
        reference = ExportableDetector(detector).eval()(images)
    result = compare_detections(reference, OrtDetector(path)(images))
    result['passed'] = (result['max_abs_box'] <= tolerance and
                        result['max_abs_score'] <= tolerance)
    return result


def pytorch_detections(detector: nn.Module, images: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
    """The same detections through the detector's own ``predict`` (per-image head code)."""
    from mmdet.structures import DetDataSample as Sample
    h, w = images.shape[-2:]
    wrapper = ExportableDetector(detector)
    samples = [Sample(metainfo=dict(img_shape=(h, w), batch_input_shape=(h, w),
                                    pad_shape=(h, w), scale_factor=(1.0, 1.0), ori_shape=(h, w)))
               for _ in range(images.shape[0])]
    with torch.no_grad():
        results = detector.predict(wrapper.preprocess(images), samples, rescale=False)
    out: List[InstanceData] = [r.pred_instances for r in results]
    return (torch.stack([o.bboxes for o in out]), torch.stack([o.scores for o in out]),
            torch.stack([o.labels for o in out]))


__all__ = ['ExportableDetector', 'OrtDetector', 'UnsupportedExport',
           'build_detector', 'compare_detections', 'export_onnx', 'pytorch_detections',
           'sample_images', 'verify_onnx', 'MIN_OPSET', 'DEFAULT_OPSET']

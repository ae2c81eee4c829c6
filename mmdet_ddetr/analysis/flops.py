"""FLOP counting for DETR-family detectors with the deformable attention counted.

mmengine's :class:`~mmengine.analysis.FlopAnalyzer` traces the model with ``torch.jit`` and
counts every traced op it has a handle for; like fvcore (which the DETR / Deformable DETR papers
used) it counts **one multiply-add as one FLOP**. The core of multi-scale deformable attention
(MSDA) traces as one node, our operator ``mmdet_ddetr::ms_deform_attn`` (on every device), for
which mmengine has no handle. :mod:`.msda_flops` defines the handle and registers it in
mmengine's default table when the op is defined, so mmdet's ``get_flops.py`` counts it as well;
:func:`count_flops` also sets it explicitly.

Counting rule (Deformable DETR, appendix A.1): for every query, head, level and sampling point,
bilinear interpolation reads 4 neighbouring values of a ``head_dim`` vector (4 x ``head_dim``
multiply-adds) and the attention weighting multiplies the interpolated vector by one scalar and
accumulates it (``head_dim`` multiply-adds)::

    MSDA FLOPs = batch * num_query * num_heads * num_levels * num_points * head_dim * (4 + 1)
               = 5 * batch * num_query * num_levels * num_points * embed_dims

The four ``nn.Linear`` layers of the module (``value_proj``, ``sampling_offsets``,
``attention_weights``, ``output_proj``) run outside the op and are counted once by mmengine's
``aten::linear`` handle; the ``grid_sample`` calls inside the op are not traced, so nothing is
counted twice.
Softmax, additions and the computation of sampling locations are element-wise and, as in
fvcore, not counted.
"""
import logging
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from mmengine.analysis import FlopAnalyzer
from mmengine.logging import MMLogger
from torch import Tensor, nn

from mmdet.structures import DetDataSample

from ..models.deformable_detr.deformable_attention import MSDeformAttention
from .msda_flops import BILINEAR_TAPS, MSDA_OPS, msda_flop_handle, msda_sampling_flops


def _zero_flops(inputs: List[Any], outputs: List[Any]) -> int:
    """Handle that counts nothing."""
    return 0


class TensorForward(nn.Module):
    """``detector`` as a module ``f(images) -> head outputs`` for tracing (mmdet's
    ``mode='tensor'`` with the data samples bound)."""

    def __init__(self, detector: nn.Module, data_samples: Sequence[DetDataSample]) -> None:
        super().__init__()
        self.detector = detector
        self._data_samples = list(data_samples)

    def forward(self, inputs: Tensor):
        return self.detector._forward(inputs, self._data_samples)


def dummy_inputs(height: int, width: int, batch: int = 1,
                 device: str = 'cpu') -> Tuple[Tensor, List[DetDataSample]]:
    """A normalised random image batch and data samples without padding.

    FLOPs only depend on the input shape; the images are random so that data-dependent
    branches (two-stage top-k) see realistic values.
    """
    g = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, height, width, generator=g).to(device)
    samples = []
    for _ in range(batch):
        meta = dict(img_shape=(height, width), ori_shape=(height, width),
                    batch_input_shape=(height, width), pad_shape=(height, width),
                    scale_factor=(1.0, 1.0))
        samples.append(DetDataSample(metainfo=meta))
    return inputs, samples


#: Top-level parts reported separately (anything else goes to ``other``).
PARTS = ('backbone', 'neck', 'encoder', 'decoder', 'bbox_head')


@dataclass
class FlopsReport:
    """FLOPs (multiply-adds) of one forward pass.

    Attributes:
        shape: (H, W) input size.
        total: All counted FLOPs.
        by_part: FLOPs per top-level part (:data:`PARTS` plus ``other``).
        by_op: FLOPs per op kind (``linear``, ``_convolution``, ``ms_deform_attn``, ...).
        msda: FLOPs of the deformable sampling alone (part of ``total``).
        msda_calls: Traced MSDA sampling nodes.
        params: Parameters of the model.
        uncounted_ops: Op kinds without a handle and how often they were traced (element-wise
            ops, softmax, ...; not counted, as in fvcore).
    """

    shape: Tuple[int, int]
    total: int
    by_part: Dict[str, int]
    by_op: Dict[str, int]
    msda: int
    msda_calls: int
    params: int
    uncounted_ops: Dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> Dict[str, Any]:
        return dict(shape=list(self.shape), total=self.total, by_part=self.by_part,
                    by_op=self.by_op, msda=self.msda, msda_calls=self.msda_calls,
                    params=self.params, uncounted_ops=self.uncounted_ops)


def count_flops(detector: nn.Module, height: int, width: int,
                count_batchnorm: bool = False) -> FlopsReport:
    """Count the FLOPs of one image of ``height`` x ``width`` through ``detector``.

    Args:
        detector: An mmdet detector (any DETR-like model; other models use mmdet's tensor
            mode). It is put in eval mode and restored afterwards.
        height: Input height (after resizing; the tool does not pad).
        width: Input width.
        count_batchnorm: Count BatchNorm as 2 FLOPs per element (mmengine's default).
            Off by default: the papers' backbones use frozen BN that is implemented as an
            element-wise affine and not counted, and in eval mode BN folds into the conv.

    Returns:
        FlopsReport: totals, per part and per op.
    """
    if height < 1 or width < 1:
        raise ValueError(f'input size must be positive, got {height}x{width}')
    device = next(detector.parameters()).device
    inputs, samples = dummy_inputs(height, width, device=str(device))
    wrapper = TensorForward(detector, samples)
    was_training = detector.training
    detector.eval()
    logger = MMLogger.get_current_instance()
    old_level = logger.level
    # mmengine logs every unsupported op / uncalled module as a warning; the report lists
    # the uncounted ops instead.
    logger.setLevel(logging.ERROR)
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter('ignore')  # tracer warnings about Python ints
            analyzer = FlopAnalyzer(wrapper, (inputs, ))
            # Also registered as a default on import (what mmdet's tool relies on); set here
            # too so that this count never depends on that registration.
            analyzer.set_op_handle(**{op: msda_flop_handle for op in MSDA_OPS})
            if not count_batchnorm:
                # A None handle would only add the op to the ignored set while the default
                # handle stays active; a zero handle really turns it off.
                analyzer.set_op_handle('aten::batch_norm', _zero_flops)
            analyzer.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analyzer.tracer_warnings('none')
            total = int(analyzer.total())
            by_module = analyzer.by_module()
            by_op = {k: int(v) for k, v in analyzer.by_operator().items() if v}
            uncounted = dict(analyzer.unsupported_ops())
    finally:
        logger.setLevel(old_level)
        detector.train(was_training)
    by_part = {}
    for part in PARTS:
        by_part[part] = int(by_module.get(f'detector.{part}', 0))
    by_part['other'] = total - sum(by_part.values())
    # mmengine reports op kinds without their namespace ('prim::PythonOp.X' -> 'PythonOp.X').
    msda_kinds = {op.split('::', 1)[1] for op in MSDA_OPS}
    msda = sum(v for k, v in by_op.items() if k in msda_kinds)
    msda_calls = sum(1 for m in detector.modules() if isinstance(m, MSDeformAttention))
    params = sum(p.numel() for p in detector.parameters())
    return FlopsReport(shape=(height, width), total=total, by_part=by_part, by_op=by_op,
                       msda=msda, msda_calls=msda_calls, params=params,
                       uncounted_ops={k: int(v) for k, v in uncounted.items()})


def resized_shape(height: int, width: int, short: int = 800,
                  max_long: int = 1333) -> Tuple[int, int]:
    """Shape after the DETR test transform: shorter side ``short``, longer side at most
    ``max_long`` (keep ratio), rounded as the official ``get_size_with_aspect_ratio``."""
    if height < 1 or width < 1:
        raise ValueError(f'image size must be positive, got {height}x{width}')
    size = short
    min_side, max_side = float(min(height, width)), float(max(height, width))
    if max_side / min_side * size > max_long:
        size = int(round(max_long * min_side / max_side))
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


def average_report(reports: Sequence[FlopsReport]) -> FlopsReport:
    """Mean of several reports (the papers average over the first 100 COCO val images)."""
    if not reports:
        raise ValueError('no reports to average')
    n = len(reports)

    def mean_dict(key: str) -> Dict[str, int]:
        keys = sorted({k for r in reports for k in getattr(r, key)})
        return {k: int(round(sum(getattr(r, key).get(k, 0) for r in reports) / n)) for k in keys}

    mean_h = int(round(sum(r.shape[0] for r in reports) / n))
    mean_w = int(round(sum(r.shape[1] for r in reports) / n))
    return FlopsReport(shape=(mean_h, mean_w),
                       total=int(round(sum(r.total for r in reports) / n)),
                       by_part=mean_dict('by_part'), by_op=mean_dict('by_op'),
                       msda=int(round(sum(r.msda for r in reports) / n)),
                       msda_calls=reports[0].msda_calls, params=reports[0].params,
                       uncounted_ops=mean_dict('uncounted_ops'))


def expected_msda_flops(detector: nn.Module, height: int, width: int) -> Optional[int]:
    """Closed-form MSDA sampling FLOPs of a :class:`DDETR` for one unpadded image.

    Used by the tests as an independent check of the traced count. Encoder tokens are the
    feature-map cells of all levels; decoder queries are ``num_queries``. Returns None for a
    model without MSDA.
    """
    attns = [m for m in detector.modules() if isinstance(m, MSDeformAttention)]
    if not attns:
        return None
    with torch.no_grad():
        was_training = detector.training
        detector.eval()
        try:
            feats = detector.extract_feat(torch.zeros(1, 3, height, width,
                                                      device=next(detector.parameters()).device))
        finally:
            detector.train(was_training)
    num_tokens = sum(int(f.shape[-2]) * int(f.shape[-1]) for f in feats)
    total = 0
    enc_ids = {id(m) for m in detector.encoder.modules()}
    for m in attns:
        num_query = num_tokens if id(m) in enc_ids else detector.num_queries
        total += msda_sampling_flops(1, num_query, m.num_heads, m.num_levels, m.num_points,
                                     m.embed_dims // m.num_heads)
    return total


def gflops(value: float) -> str:
    """Format FLOPs as GFLOPs with 2 decimals."""
    return f'{value / 1e9:.2f}'


__all__ = [
    'BILINEAR_TAPS', 'MSDA_OPS', 'msda_sampling_flops', 'msda_flop_handle', 'TensorForward',
    'dummy_inputs', 'FlopsReport', 'count_flops', 'resized_shape', 'average_report',
    'expected_msda_flops', 'gflops', 'PARTS'
]

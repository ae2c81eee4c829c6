"""Record what the attention layers looked at during one forward pass, without changing it.

* :class:`MSDARecorder`: for every :class:`MSDeformAttention` call, the sampling locations and
  attention weights actually used (the module's own ``record`` flag) plus the inputs needed to
  interpret them (reference points, level shapes) captured by forward pre-hooks.
* :class:`SMCARecorder`: for every SMCA decoder layer, the Gaussian log-prior of each head (a
  forward hook on :class:`SMCAGaussianPrior`) and the per-head, prior-modulated co-attention
  weights (``softmax(QK^T / sqrt(d) + log G)``): mmcv's ``MultiheadAttention`` (the default)
  computes them anyway inside ``nn.MultiheadAttention``, which is asked to return them per head
  instead of averaged; :class:`LeanMultiheadAttention` computes them from the same projections
  while ``record_weights`` is set.

Neither recorder changes a computed value: the hooks only read tensors (or choose how
``nn.MultiheadAttention`` returns the weights it computes in any case), and the recorded weights
are computed next to the attention output, which runs the same kernel with and without
recording. The tests in ``tests/analysis_tools/test_visualize_attention.py`` check both claims.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from mmcv.cnn.bricks.transformer import MultiheadAttention
from torch import Tensor, nn

from ..models.efficient import LeanMultiheadAttention
from ..models.deformable_detr.deformable_attention import MSDeformAttention


@dataclass
class MSDARecord:
    """One call of a deformable attention module.

    Attributes:
        sampling_locations: (bs, num_query, heads, levels, points, 2) normalised (x, y) in the
            padded input, exactly as passed to the sampling op.
        attention_weights: (bs, num_query, heads, levels, points), softmax over levels x points.
        reference_points: (bs, num_query, levels, 2) points or (..., 4) boxes (cx, cy, w, h),
            normalised, as passed to the module.
        spatial_shapes: (levels, 2) (H_l, W_l).
        level_start_index: (levels,) start of every level in the flattened value.
    """

    sampling_locations: Tensor
    attention_weights: Tensor
    reference_points: Tensor
    spatial_shapes: Tensor
    level_start_index: Optional[Tensor]


class MSDARecorder:
    """Context manager recording every :class:`MSDeformAttention` call of ``model``.

    Example::

        with MSDARecorder(model) as rec:
            model(inputs, data_samples, mode='tensor')
        last_decoder = rec.records['decoder.layers.5.cross_attn'][0]

    Attributes:
        records: Module name -> list of :class:`MSDARecord`, one per call, in call order.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules: Dict[str, MSDeformAttention] = {
            name: m for name, m in model.named_modules() if isinstance(m, MSDeformAttention)
        }
        self.records: Dict[str, List[MSDARecord]] = {name: [] for name in self.modules}
        self._handles: list = []
        self._pending: Dict[str, dict] = {}
        self._old_flags: Dict[str, bool] = {}

    def __enter__(self) -> 'MSDARecorder':
        for name, module in self.modules.items():
            self._old_flags[name] = module.record
            module.record = True
            self._handles.append(module.register_forward_pre_hook(
                self._make_pre_hook(name), with_kwargs=True))
            self._handles.append(module.register_forward_hook(self._make_hook(name)))
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for name, module in self.modules.items():
            module.record = self._old_flags.get(name, False)
            # Do not keep the last batch alive in the model after recording.
            module.last_sampling = None

    def _make_pre_hook(self, name: str):
        def pre_hook(module, args, kwargs):
            if 'reference_points' not in kwargs or 'spatial_shapes' not in kwargs:
                raise RuntimeError(f'{name}: MSDARecorder needs reference_points and '
                                   'spatial_shapes passed as keyword arguments')
            self._pending[name] = dict(
                reference_points=kwargs['reference_points'].detach(),
                spatial_shapes=kwargs['spatial_shapes'].detach(),
                level_start_index=(kwargs['level_start_index'].detach()
                                   if kwargs.get('level_start_index') is not None else None))
            return None  # inputs unchanged

        return pre_hook

    def _make_hook(self, name: str):
        def hook(module, args, output):
            locations, weights = module.last_sampling
            self.records[name].append(MSDARecord(
                sampling_locations=locations, attention_weights=weights,
                **self._pending.pop(name)))
            return None  # output unchanged

        return hook

    def names(self, part: str) -> List[str]:
        """Recorded module names under a top-level part (``'encoder'`` / ``'decoder'``), in
        layer order."""
        return [n for n in self.modules if n == part or n.startswith(part + '.')]


@dataclass
class SMCALayerRecord:
    """One SMCA decoder layer's co-attention, per scale (one entry for single-scale SMCA).

    Attributes:
        log_priors: Per scale, (bs, heads, num_queries, H*W) Gaussian log-prior ``log G``
            (before the key padding mask).
        attn_weights: Per scale, (bs, heads, num_queries, H*W) prior-modulated attention
            weights (rows sum to 1 over the keys of that scale).
        spatial_shapes: Per scale, (H, W) of the key feature map.
        centres: Per scale, (bs, num_queries, 2) shared Gaussian centres (x, y) in cells,
            before the per-head offsets.
    """

    log_priors: List[Tensor]
    attn_weights: List[Tensor]
    spatial_shapes: List[Tuple[int, int]]
    centres: List[Tensor]


class SMCARecorder:
    """Context manager recording the Gaussian priors and modulated attention of every SMCA
    decoder layer (single- or multi-scale) of ``model``.

    Works through hooks only, so the SMCA modules need no recording code of their own.

    Attributes:
        layers: One :class:`SMCALayerRecord` per decoder layer, in layer order (filled per
            forward pass; a second pass appends to the same records).
    """

    def __init__(self, model: nn.Module) -> None:
        from ..models.smca_detr import SMCADecoderLayerBase
        self._layers = [m for m in model.modules() if isinstance(m, SMCADecoderLayerBase)]
        if not self._layers:
            raise ValueError('the model has no SMCA decoder layer to record')
        self.layers = [SMCALayerRecord([], [], [], []) for _ in self._layers]
        self._handles: list = []

    def __enter__(self) -> 'SMCARecorder':
        for record, layer in zip(self.layers, self._layers):
            for prior in layer.priors():
                self._handles.append(prior.register_forward_hook(
                    self._prior_hook(record), with_kwargs=True))
            attn = layer.cross_attn
            if isinstance(attn, LeanMultiheadAttention):
                attn.record_weights = True
                self._handles.append(attn.register_forward_hook(self._lean_hook(record)))
            elif isinstance(attn, MultiheadAttention):
                self._handles += [
                    attn.attn.register_forward_pre_hook(self._per_head_weights,
                                                        with_kwargs=True),
                    attn.attn.register_forward_hook(self._mha_hook(record))]
            else:
                raise TypeError(f'SMCARecorder expects mmcv MultiheadAttention (or '
                                f'LeanMultiheadAttention) as the co-attention, got '
                                f'{type(attn).__name__}')
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for layer in self._layers:
            if isinstance(layer.cross_attn, LeanMultiheadAttention):
                layer.cross_attn.record_weights = False
                layer.cross_attn.recorded_weights = None

    @staticmethod
    def _prior_hook(record: SMCALayerRecord):
        def hook(module, args, kwargs, output):
            names = ('query_feat', 'centres', 'spatial_shape')
            values = dict(zip(names, args))
            values.update({k: v for k, v in kwargs.items() if k in names})
            record.log_priors.append(output.detach())
            record.centres.append(values['centres'].detach())
            record.spatial_shapes.append(tuple(int(s) for s in values['spatial_shape']))
            return None

        return hook

    @staticmethod
    def _lean_hook(record: SMCALayerRecord):
        def hook(module, args, output):
            record.attn_weights.append(module.recorded_weights)
            module.recorded_weights = None
            return None

        return hook

    @staticmethod
    def _per_head_weights(module, args, kwargs):
        # mmcv calls nn.MultiheadAttention with need_weights=True (its default): the weights
        # are computed anyway; this only keeps the heads apart instead of averaging them.
        return args, dict(kwargs, need_weights=True, average_attn_weights=False)

    @staticmethod
    def _mha_hook(record: SMCALayerRecord):
        def hook(module, args, output):
            record.attn_weights.append(output[1].detach())  # (bs, heads, Q, K)
            return None

        return hook


def level_token_index(spatial_shapes: Sequence[Tuple[int, int]], level: int, x: float,
                      y: float, input_wh: Tuple[float, float]) -> int:
    """Flattened token index of the cell of ``level`` that contains input pixel (x, y).

    Args:
        spatial_shapes: (H_l, W_l) of every level, in flattening order.
        level: Level of the token.
        x, y: Pixel in the (padded) network input.
        input_wh: (W, H) of the padded network input.

    Raises:
        ValueError: when the pixel is outside the input or the level does not exist.
    """
    if not 0 <= level < len(spatial_shapes):
        raise ValueError(f'level {level} out of range: the model has {len(spatial_shapes)} '
                         'levels')
    w_in, h_in = input_wh
    if not (0 <= x < w_in and 0 <= y < h_in):
        raise ValueError(f'pixel ({x}, {y}) is outside the {w_in:g}x{h_in:g} network input')
    start = sum(int(h) * int(w) for h, w in spatial_shapes[:level])
    h_l, w_l = (int(s) for s in spatial_shapes[level])
    col = min(int(x / w_in * w_l), w_l - 1)
    row = min(int(y / h_in * h_l), h_l - 1)
    return start + row * w_l + col


__all__ = ['MSDARecord', 'MSDARecorder', 'SMCALayerRecord', 'SMCARecorder',
           'level_token_index']

"""Registered layer types whose dropouts draw their CPU masks with :func:`fast_dropout`.

mmcv's ``FFN`` and ``MultiScaleDeformableAttention`` create their ``nn.Dropout`` modules
themselves, so no config argument reaches them; these subclasses are the same modules (same
arguments, parameters, state-dict keys and initial weights for a seed) with those dropouts
swapped by :func:`use_fast_dropout`. A config selects them by name, e.g.
``ffn_cfg=dict(type='FastDropoutFFN', ...)``. They change nothing where every dropout is 0 or the
model is in eval mode, and nothing on CUDA (where :func:`fast_dropout` is ``F.dropout``).
"""
from mmcv.cnn.bricks.transformer import FFN

from mmdet.registry import MODELS
from ..deformable_detr.deformable_attention import MSDeformAttention
from .fast_dropout import use_fast_dropout


@MODELS.register_module()
class FastDropoutFFN(FFN):
    """mmcv ``FFN`` with fast CPU dropout; arguments: those of
    :class:`mmcv.cnn.bricks.transformer.FFN`."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        use_fast_dropout(self)


@MODELS.register_module()
class FastDropoutMSDeformAttention(MSDeformAttention):
    """:class:`MSDeformAttention` whose output dropout is fast on CPU; same arguments."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        use_fast_dropout(self)


__all__ = ['FastDropoutFFN', 'FastDropoutMSDeformAttention']

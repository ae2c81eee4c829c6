"""torch.compile of a detector's tensor core (backbone + neck, transformer).

mmengine's ``compile=True`` compiles the whole ``train_step``: data preprocessing, Hungarian
matching (scipy), ``backward`` and the optimizer step are traced too and break the graph into
dozens of pieces that recompile when the batch changes. Compiling only
``extract_feat`` and ``forward_transformer`` keeps each in one graph (no break inside the
transformer: the deformable sampling is the opaque ``mmdet_ddetr::ms_deform_attn`` op) with
dynamic shapes, so new image sizes do not recompile. The matching, the losses and the
post-processing stay eager. Inductor lowers the deformable sampling's forward on CPU to one
fused loop (:func:`mmdet_ddetr.ops.register_inductor_decomposition`).

``tools/train.py --compile``, ``tools/test.py --compile`` and ``compile=True`` in a config
(through :class:`~mmdet_ddetr.engine.runner.RegionalCompileRunner`, the configs'
``runner_type``) all come here.
"""
from typing import Any, Dict, Optional

import torch
from torch import nn

from mmdet_ddetr.ops import register_inductor_decomposition

#: What ``--compile`` means: dynamic shapes so new image sizes reuse the graphs.
DEFAULT_COMPILE_CFG: Dict[str, Any] = dict(dynamic=True)
_COMPILED = ('extract_feat', 'forward_transformer')


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside an mmengine/DDP wrapper."""
    return getattr(model, 'module', model)


def compile_detector(model: nn.Module, compile_cfg: Optional[Dict[str, Any]] = None) -> bool:
    """Replace ``extract_feat`` and ``forward_transformer`` of ``model`` by compiled versions.

    Args:
        model (nn.Module): A detector of this package (or a wrapper holding it in ``.module``).
        compile_cfg (dict, optional): ``torch.compile`` keyword arguments on top of
            :data:`DEFAULT_COMPILE_CFG`.

    Returns:
        bool: True if this call compiled them, False if they already were (a second call is a
        no-op: compiling the compiled functions again would nest two caches).
    """
    detector = unwrap(model)
    missing = [name for name in _COMPILED if not hasattr(detector, name)]
    if missing:
        raise TypeError(f'{type(detector).__name__} has no {missing}: compile_detector expects '
                        'an mmdet DetectionTransformer (DDETR, SMCA-DETR)')
    if getattr(detector, '_compile_cfg', None) is not None:
        return False
    cfg = dict(DEFAULT_COMPILE_CFG, **(compile_cfg or {}))
    register_inductor_decomposition()  # the deformable sampling's fused CPU lowering
    for name in _COMPILED:
        setattr(detector, name, torch.compile(getattr(detector, name), **cfg))
    detector._compile_cfg = cfg
    return True


__all__ = ['compile_detector', 'unwrap', 'DEFAULT_COMPILE_CFG']

"""torch.compile of a detector's tensor core (backbone + neck, transformer).

mmengine's ``compile=True`` compiles the whole ``train_step``: data preprocessing, Hungarian
matching (scipy), ``backward`` and the optimizer step are traced too and break the graph into
dozens of pieces that recompile when the batch changes. Compiling only
``extract_feat`` and ``forward_transformer`` keeps each in one graph (no break inside the
transformer: the deformable sampling is the opaque ``mmdet_ddetr::ms_deform_attn`` op) with
dynamic shapes, so new image sizes do not recompile. The matching, the losses and the
post-processing stay eager.
"""
from typing import Any, Dict, Optional

import torch
from torch import nn

#: What ``--compile`` means: dynamic shapes so new image sizes reuse the graphs.
DEFAULT_COMPILE_CFG: Dict[str, Any] = dict(dynamic=True)
_COMPILED = ('extract_feat', 'forward_transformer')


def unwrap(model: nn.Module) -> nn.Module:
    """The detector inside an mmengine/DDP wrapper."""
    return getattr(model, 'module', model)


def compile_detector(model: nn.Module, compile_cfg: Optional[Dict[str, Any]] = None
                     ) -> nn.Module:
    """Replace ``extract_feat`` and ``forward_transformer`` of ``model`` by compiled versions.

    Args:
        model (nn.Module): A detector of this package (or a wrapper holding it in ``.module``).
        compile_cfg (dict, optional): ``torch.compile`` keyword arguments; default
            :data:`DEFAULT_COMPILE_CFG`.

    Returns:
        nn.Module: The same detector, compiled in place (instance attributes).
    """
    detector = unwrap(model)
    missing = [name for name in _COMPILED if not hasattr(detector, name)]
    if missing:
        raise TypeError(f'{type(detector).__name__} has no {missing}: compile_detector expects '
                        'an mmdet DetectionTransformer (DDETR, SMCA-DETR)')
    cfg = dict(DEFAULT_COMPILE_CFG, **(compile_cfg or {}))
    for name in _COMPILED:
        setattr(detector, name, torch.compile(getattr(detector, name), **cfg))
    return detector


__all__ = ['compile_detector', 'unwrap', 'DEFAULT_COMPILE_CFG']

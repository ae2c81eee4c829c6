"""Parts every DETR-style layer of this package builds the same way."""
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks.transformer import FFN
from mmengine.model import BaseModule, ModuleList

from .fast_dropout import use_fast_dropout


def add_ffn_and_norms(layer: BaseModule, num_norms: int) -> None:
    """Give a DETR-style layer (with ``ffn_cfg``, ``norm_cfg`` and ``embed_dims`` set) its
    ``ffn``, with fast CPU dropout, and ``num_norms`` post-norms, in mmdet's order (so the same
    initial weights for a seed and the same state-dict keys as mmdet's layers)."""
    layer.ffn = use_fast_dropout(FFN(**layer.ffn_cfg))
    layer.norms = ModuleList(
        [build_norm_layer(layer.norm_cfg, layer.embed_dims)[1] for _ in range(num_norms)])


__all__ = ['add_ffn_and_norms']

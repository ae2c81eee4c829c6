"""Small SMCA configs for CPU unit tests (ResNet-18 without pretrained weights)."""
import copy
from typing import Any, Dict

from mmengine.config import Config

import mmdet_ddetr.models.smca_detr  # noqa: F401  (registers the SMCA types)

from tests.conftest import REPO

SS_BASE = REPO / 'configs/_base_/models/smca-detr_r50.py'
MS_BASE = REPO / 'configs/_base_/models/smca-detr-ms_r50.py'


def small_smca_cfg(multi_scale: bool = False, dims: int = 32, heads: int = 4,
                   num_queries: int = 10, num_classes: int = 3, scale_type: str = 'head_xy',
                   enc_layer_types=('intra', 'multi', 'intra'), dec_layers: int = 2,
                   scale_selection: bool = True, shared_heads: bool = False) -> Dict[str, Any]:
    """The shipped base model config, shrunk (dims, layers, ResNet-18, no weight download)."""
    base = Config.fromfile(str(MS_BASE if multi_scale else SS_BASE))
    cfg = copy.deepcopy(base.model.to_dict())
    out_indices = (2, 3) if multi_scale else (3, )
    cfg.update(num_queries=num_queries)
    cfg['backbone'] = dict(type='ResNet', depth=18, num_stages=4, out_indices=out_indices,
                           norm_cfg=dict(type='BN', requires_grad=True), norm_eval=False,
                           style='pytorch', init_cfg=None)
    cfg['neck'].update(in_channels=[64 * 2**i for i in out_indices], out_channels=dims)
    if multi_scale:
        cfg['neck']['norm_cfg'] = dict(type='GN', num_groups=8)
        cfg['encoder']['layer_types'] = list(enc_layer_types)
    else:
        cfg['encoder']['num_layers'] = 2
    cfg['decoder']['num_layers'] = dec_layers
    layers = [cfg['encoder']['layer_cfg'], cfg['decoder']['layer_cfg']]
    for layer in layers:
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer:
                layer[key] = dict(layer[key], embed_dims=dims, num_heads=heads, dropout=0.0)
        layer['ffn_cfg'] = dict(layer['ffn_cfg'], embed_dims=dims, feedforward_channels=64,
                                ffn_drop=0.0)
    prior = cfg['decoder']['layer_cfg']['gaussian_prior_cfg']
    prior.update(scale_type=scale_type, shared_heads=shared_heads)
    if multi_scale:
        cfg['decoder']['layer_cfg']['scale_selection_cfg']['enabled'] = scale_selection
    cfg['positional_encoding']['num_feats'] = dims // 2
    cfg['bbox_head'].update(num_classes=num_classes, embed_dims=dims)
    return cfg

"""Shared helpers: small DDETR configs, fixtures location, registry scope."""
import copy
import os
from pathlib import Path
from typing import Any, Dict, List, Sequence

import pytest
import torch

import mmdet_ddetr  # noqa: F401  (registers the models)
from mmengine.registry import DefaultScope
from mmengine.structures import InstanceData
from mmdet.structures import DetDataSample

REPO = Path(__file__).resolve().parents[1]
# The official fixtures travel with the repository (tests/data/official/README.md), to the GPU
# machine too; MMDET_DDETR_FIXTURES points the tests at another folder.
FIXTURES = Path(os.environ.get('MMDET_DDETR_FIXTURES', REPO / 'tests' / 'data' / 'official'))

DefaultScope.get_instance('mmdet_ddetr_tests', scope_name='mmdet')


def official_fixture(name: str) -> Dict[str, Any]:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f'official fixture {path} is missing (tests/data/official/README.md)')
    return torch.load(path, map_location='cpu', weights_only=True)


def small_ddetr_cfg(num_levels: int = 4, with_box_refine: bool = False,
                    as_two_stage: bool = False, dims: int = 32, heads: int = 4,
                    num_queries: int = 10, num_classes: int = 3,
                    scoring: str = 'objectness') -> Dict[str, Any]:
    """A DDETR small enough for CPU unit tests, backbone ResNet-18 without weights."""
    from mmengine.config import Config
    base = Config.fromfile(str(REPO / 'configs/_base_/models/deformable-detr_r50.py'))
    cfg = copy.deepcopy(base.model.to_dict())
    backbone_levels = min(num_levels, 3)
    out_indices = tuple(range(4 - backbone_levels, 4))
    cfg.update(num_queries=num_queries, num_feature_levels=num_levels,
               with_box_refine=with_box_refine, as_two_stage=as_two_stage)
    cfg['backbone'] = dict(type='ResNet', depth=18, num_stages=4, out_indices=out_indices,
                           norm_cfg=dict(type='BN', requires_grad=False), norm_eval=True,
                           style='pytorch', init_cfg=None)
    cfg['neck'].update(in_channels=[64 * 2**i for i in out_indices], out_channels=dims,
                       num_outs=num_levels, norm_cfg=dict(type='GN', num_groups=8 if dims < 256 else 32))
    for coder in ('encoder', 'decoder'):
        cfg[coder]['num_layers'] = 2
        layer = cfg[coder]['layer_cfg']
        for key in ('self_attn_cfg', 'cross_attn_cfg'):
            if key in layer:
                layer[key].update(embed_dims=dims, num_heads=heads)
                if 'num_levels' in layer[key]:
                    layer[key]['num_levels'] = num_levels
        layer['ffn_cfg'].update(embed_dims=dims, feedforward_channels=64)
    cfg['positional_encoding']['num_feats'] = dims // 2
    cfg['proposal_generator']['scoring'] = scoring
    cfg['bbox_head']['num_classes'] = num_classes
    return cfg


def build_model(cfg: Dict[str, Any]) -> torch.nn.Module:
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def make_batch(sizes: Sequence[Sequence[int]], num_classes: int = 3, boxes_per_image: Sequence[int] = None,
               seed: int = 0) -> Dict[str, Any]:
    """Padded images + data samples as mmdet's DetDataPreprocessor would give them."""
    g = torch.Generator().manual_seed(seed)
    pad_h = max(h for h, _ in sizes)
    pad_w = max(w for _, w in sizes)
    inputs = torch.zeros(len(sizes), 3, pad_h, pad_w)
    samples: List[DetDataSample] = []
    boxes_per_image = boxes_per_image or [2] * len(sizes)
    for i, (h, w) in enumerate(sizes):
        inputs[i, :, :h, :w] = torch.randn(3, h, w, generator=g)
        n = boxes_per_image[i]
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = (torch.rand(n, 2, generator=g) * 0.3 + 0.1) * torch.tensor([w, h])
        sample = DetDataSample(metainfo=dict(img_shape=(h, w), ori_shape=(h, w),
                                             batch_input_shape=(pad_h, pad_w),
                                             pad_shape=(pad_h, pad_w), scale_factor=(1.0, 1.0)))
        sample.gt_instances = InstanceData(
            bboxes=torch.cat([xy, xy + wh], 1),
            labels=torch.randint(0, num_classes, (n, ), generator=g))
        samples.append(sample)
    return dict(inputs=inputs, data_samples=samples)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``cuda`` are always collected and skipped where torch sees no GPU (unless
    ``MMDET_DDETR_CUDA_TEST_DEVICE=cpu`` rehearses them on the CPU, see tests/cuda)."""
    if torch.cuda.is_available() or os.environ.get('MMDET_DDETR_CUDA_TEST_DEVICE') == 'cpu':
        return
    skip = pytest.mark.skip(reason='needs a CUDA GPU (run by tools/device/cuda_check.sh)')
    for item in items:
        if item.get_closest_marker('cuda') is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope='session')
def _quiet_init_logs():
    """init_weights logs every parameter at INFO; keep test output readable."""
    import logging

    from mmengine.logging import MMLogger
    MMLogger.get_current_instance().setLevel(logging.WARNING)
    yield

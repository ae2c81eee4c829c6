"""SMCA's input projection is initialised as the official code leaves it: PyTorch's Conv2d
default (kaiming-uniform a=sqrt(5), bias U(+-1/sqrt(fan_in))), not ChannelMapper's Xavier with
zero bias, in every single-scale SMCA config (issue 13)."""
import json
import math
from pathlib import Path

import pytest
from mmengine.config import Config

from mmdet.registry import MODELS
from tests.conftest import REPO

SINGLE_SCALE = [
    p for p in sorted((REPO / 'configs' / 'smca_detr').glob('*.py')) +
    sorted((REPO / 'configs' / 'convergence_study').glob('smca_r18_c4*.py'))
    if Config.fromfile(str(p)).model.type == 'SMCADETR'
]


def _neck_key(path: Path) -> str:
    return json.dumps(Config.fromfile(str(path)).model.neck.to_dict(), sort_keys=True)


# One model per distinct neck config: the COCO configs (R50 50e / 108e, R101) share the base
# config's neck, and building three R50/R101 models would test the same dict three times.
_first_per_neck = {}
for _path in sorted(SINGLE_SCALE, key=lambda p: ('r101' in p.name, p.name)):  # R50 before R101
    _first_per_neck.setdefault(_neck_key(_path), _path)
DISTINCT_NECKS = list(_first_per_neck.values())


def test_every_single_scale_config_is_covered():
    names = {p.name for p in SINGLE_SCALE}
    assert {'smca-detr_r50_8xb2-50e_coco.py', 'smca-detr_r101_8xb2-50e_coco.py',
            'smca-detr_r18_1xb4-quickstart_synthetic.py', 'smca_r18_c4.py'} <= names
    assert {_neck_key(p) for p in SINGLE_SCALE} == {_neck_key(p) for p in DISTINCT_NECKS}


@pytest.mark.parametrize('path', DISTINCT_NECKS, ids=lambda p: p.name)
def test_input_projection_has_the_torch_default_init(path: Path):
    cfg = Config.fromfile(str(path))
    cfg.model.backbone.init_cfg = None  # no download; the neck is what is checked
    model = MODELS.build(cfg.model)
    model.init_weights()
    conv = model.neck.convs[0].conv
    fan_in = conv.in_channels * conv.kernel_size[0] * conv.kernel_size[1]
    bound = 1 / math.sqrt(fan_in)
    expected_std = bound / math.sqrt(3)
    # Xavier-uniform (the previous init) has std sqrt(2 / (fan_in + fan_out)): 2.3x larger for
    # 2048 -> 256, and its bias is zero; both checks below would fail on it.
    assert conv.weight.abs().max() <= bound
    assert abs(conv.weight.std().item() - expected_std) < 0.1 * expected_std
    assert conv.bias.abs().max() <= bound
    assert conv.bias.std().item() > 0.5 * expected_std

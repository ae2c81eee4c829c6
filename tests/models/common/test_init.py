"""``init_cfg=dict(type='TorchDefault')`` re-draws layers with their own reset_parameters()."""
import math

import pytest
import torch
from mmengine.model import BaseModule
from torch import nn

import mmdet_ddetr.models  # noqa: F401  (registers TorchDefault)


class _Net(BaseModule):

    def __init__(self, init_cfg):
        super().__init__(init_cfg=init_cfg)
        self.conv = nn.Conv2d(512, 64, 1)
        self.fc = nn.Linear(8, 8)


def test_matching_layers_get_the_torch_default_and_others_are_left_alone():
    net = _Net([dict(type='Constant', val=0.5, layer=['Conv2d', 'Linear']),
                dict(type='TorchDefault', layer='Conv2d')])
    net.init_weights()
    bound = 1 / math.sqrt(512)  # kaiming_uniform(a=sqrt(5)) and the bias: U(-1/sqrt(fan_in), .)
    w, b = net.conv.weight, net.conv.bias
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound / math.sqrt(3)
    assert b.std() > 0.3 * bound  # a drawn bias, not zeros
    assert torch.all(net.fc.weight == 0.5)  # not a Conv2d: the Constant init stays


def test_bias_options_are_refused():
    with pytest.raises(ValueError, match='bias'):
        _Net(dict(type='TorchDefault', layer='Conv2d', bias=0)).init_weights()

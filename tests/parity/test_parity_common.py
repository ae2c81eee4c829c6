"""``to_device``: what ``check(fixture, device)`` uses to run a fixture on the GPU."""
import torch

from mmdet_ddetr.parity.common import to_device


def test_to_device_moves_every_tensor_and_keeps_the_rest():
    fixture = {'a': torch.ones(2), 'b': [torch.zeros(1), ('x', torch.ones(3))], 'meta': {'n': 3}}
    moved = to_device(fixture, 'meta')
    assert moved['a'].device.type == 'meta' and moved['b'][0].device.type == 'meta'
    assert isinstance(moved['b'][1], tuple) and moved['b'][1][0] == 'x'
    assert moved['b'][1][1].device.type == 'meta' and moved['meta'] == {'n': 3}


def test_to_device_cpu_returns_the_same_tensors():
    """The CPU parity run (1e-13) must see exactly the tensors it saw before."""
    fixture = {'a': torch.ones(2, dtype=torch.float64), 'b': [torch.zeros(1)]}
    moved = to_device(fixture, 'cpu')
    assert moved['a'] is fixture['a'] and moved['b'][0] is fixture['b'][0]

"""A toy regression model + dataset that trains in milliseconds through the real mmengine Runner.

Used by the fast engine tests: the hooks under test only see the Runner, so a tiny model makes
kill/resume/distributed scenarios cheap while exercising the same code paths as DDETR.
"""
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModel
from torch.utils.data import Dataset

from mmdet.registry import DATASETS, MODELS
from mmdet_ddetr.models.common import WeightsFitMixin

DIM = 8


@DATASETS.register_module()
class ToyRegressionDataset(Dataset):
    """``length`` fixed samples ``x -> w.x + noise`` drawn from a fixed generator."""

    metainfo = dict(classes=('value', ))

    def __init__(self, length: int = 16) -> None:
        g = torch.Generator().manual_seed(1234)
        self.x = torch.randn(length, DIM, generator=g)
        w = torch.randn(DIM, 1, generator=g)
        self.y = self.x @ w + 0.1 * torch.randn(length, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, idx: int) -> Dict[str, torch.Tensor]:
        return dict(inputs=self.x[idx], targets=self.y[idx])


@MODELS.register_module()
class ToyRegressor(WeightsFitMixin, BaseModel):
    """MLP with dropout (so that resume exactness depends on the random generators).

    Args:
        nan_at: Make ``loss_l1`` NaN and ``d1.loss_aux`` inf at this 1-based training forward
            call (0: never), to exercise ``DivergenceGuardHook``.
        hidden: Width of the hidden layer (another width is another model).

    Its weights are checked on loading like our detectors' (``WeightsFitMixin``).
    """

    def __init__(self, nan_at: int = 0, dropout: float = 0.3, hidden: int = 16) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, hidden), nn.ReLU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, 1))
        self.nan_at = nan_at
        self.calls = 0

    def forward(self, inputs: Union[torch.Tensor, List[torch.Tensor]],
                targets: Optional[Union[torch.Tensor, List[torch.Tensor]]] = None,
                data_samples=None, mode: str = 'loss'):
        if isinstance(inputs, list):
            inputs = torch.stack(inputs)
        pred = self.net(inputs)
        if mode != 'loss':
            return pred
        if isinstance(targets, list):
            targets = torch.stack(targets)
        self.calls += 1
        err = pred - targets
        losses = dict(loss_mse=(err**2).mean(), loss_l1=err.abs().mean(),
                      **{'d1.loss_aux': 0.1 * err.abs().mean()})
        if self.nan_at and self.calls == self.nan_at:
            losses['loss_l1'] = losses['loss_l1'] * float('nan')
            losses['d1.loss_aux'] = losses['d1.loss_aux'] * float('inf')
        return losses

"""SMCA's scale selection: how much each feature scale contributes to a query's co-attention.

Paper (arXiv 2101.07448, eq. 7): ``alpha_16, alpha_32, alpha_64 = Softmax(FC(O_q))``; the
multi-scale co-attention output is ``sum_s alpha_s * softmax_s(...) V_s`` where every scale has
its own softmax. The weights are computed for every query of every image: nothing is shared
across the batch.
"""
from typing import Optional

import torch
from mmcv.cnn import Linear
from mmengine.model import BaseModule
from torch import Tensor, nn

from mmdet.registry import MODELS


@MODELS.register_module()
class SMCAScaleSelection(BaseModule):
    """Per-query softmax weights over feature scales (one set per query of every image).

    Args:
        embed_dims: Channels of the query features.
        num_scales: Number of feature scales to choose between.
        enabled: Ablation switch. ``False`` = no scale selection: every scale gets the same
            weight ``1 / num_scales`` (no parameters are created).
        init_cfg: Usual mmengine init config.
    """

    def __init__(self,
                 embed_dims: int = 256,
                 num_scales: int = 3,
                 enabled: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_scales < 1:
            raise ValueError(f'num_scales must be >= 1, got {num_scales}')
        self.embed_dims = embed_dims
        self.num_scales = num_scales
        self.enabled = enabled
        self.fc: Optional[nn.Module] = None
        if enabled:
            self.fc = Linear(embed_dims, num_scales)

    def init_weights(self) -> None:
        """Start from uniform weights (zero logits) so no scale is preferred before training."""
        if self.fc is not None:
            nn.init.zeros_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, query_feat: Tensor) -> Tensor:
        """Compute the scale weights.

        Args:
            query_feat: Query features (bs, num_queries, embed_dims).

        Returns:
            Tensor: weights of shape (bs, num_queries, num_scales) that sum to 1 over the last
            axis.
        """
        bs, num_queries, _ = query_feat.shape
        if self.fc is None:
            return query_feat.new_full((bs, num_queries, self.num_scales), 1.0 / self.num_scales)
        return torch.softmax(self.fc(query_feat), dim=-1)

    def extra_repr(self) -> str:
        return f'num_scales={self.num_scales}, enabled={self.enabled}'

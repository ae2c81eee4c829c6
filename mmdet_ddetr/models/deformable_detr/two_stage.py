"""Two-stage Deformable DETR (paper Sec. 4.2 and App. A.4): the encoder proposes.

Every encoder token becomes a proposal: a box centred on its pixel with size
``0.05 * 2**level``; a scoring branch and a box branch predict a score and a box delta per
token, and the top-k scoring boxes become the decoder's reference boxes, with queries derived
from their position embedding. All of it is one module, :class:`DDETRProposalGenerator`.
"""
import math
import re
from typing import Dict, MutableMapping, Optional, Sequence, Tuple

import torch
from mmengine.model import BaseModule, bias_init_with_prob, constant_init
from torch import Tensor, nn

from mmdet.registry import MODELS
from ..common.levels import valid_size

SCORINGS = ('objectness', 'class0')


@MODELS.register_module()
class DDETRProposalGenerator(BaseModule):
    """Encoder-token proposals, their scores and boxes, their ranking and the decoder queries
    built from them.

    Args:
        embed_dims (int): Transformer width ``d``.
        num_queries (int): Proposals kept (= decoder queries).
        scoring (str): How proposals are ranked. ``'objectness'`` (default): a 1-channel,
            class-agnostic score trained with every object as foreground. ``'class0'``: the
            official ranking, channel 0 of a ``num_classes``-channel branch trained with every
            label set to 0 (needed to reproduce official training exactly).
        base_size (float): Proposal width/height on level 0; doubled per level (paper: 0.05).
        valid_range (tuple[float, float]): A proposal is used only if all four normalised
            coordinates lie strictly inside this range (official: (0.01, 0.99)).
        temperature (int): Temperature of the proposal sine embedding.
        num_classes (int): Width of the ``'class0'`` scoring branch.
        num_reg_fcs (int): Hidden ``Linear`` + ReLU layers of the box branch (as the head's).
        cls_branch (nn.Module, optional): The scoring branch, ``Linear(embed_dims, C)`` with
            C = 1 (objectness) or ``num_classes`` (class0); built here when None. DDETR passes
            the head's initial branch (or a copy), as the official code clones it.
        reg_branch (nn.Module, optional): The box branch (inverse-sigmoid box delta); built
            here when None.
        init_cfg (dict, optional): Initialisation config.
    """

    def __init__(self, embed_dims: int = 256, num_queries: int = 300,
                 scoring: str = 'objectness', base_size: float = 0.05,
                 valid_range: Tuple[float, float] = (0.01, 0.99), temperature: int = 10000,
                 num_classes: int = 80, num_reg_fcs: int = 2,
                 cls_branch: Optional[nn.Module] = None,
                 reg_branch: Optional[nn.Module] = None, init_cfg=None) -> None:
        super().__init__(init_cfg=init_cfg)
        if scoring not in SCORINGS:
            raise ValueError(f'proposal_generator.scoring={scoring!r} is unknown; use one of '
                             f'{SCORINGS}')
        if embed_dims % 2:
            raise ValueError(f'two-stage needs an even embed_dims (sine embedding of 4 box '
                             f'coordinates into 2*embed_dims channels), got {embed_dims}')
        self.embed_dims = embed_dims
        self.num_queries = num_queries
        self.scoring = scoring
        self.base_size = base_size
        self.valid_range = valid_range
        self.temperature = temperature
        self.memory_trans_fc = nn.Linear(embed_dims, embed_dims)
        self.memory_trans_norm = nn.LayerNorm(embed_dims)
        self.pos_trans_fc = nn.Linear(embed_dims * 2, embed_dims * 2)
        self.pos_trans_norm = nn.LayerNorm(embed_dims * 2)
        channels = 1 if scoring == 'objectness' else num_classes
        if cls_branch is None:
            cls_branch = nn.Linear(embed_dims, channels)
        if cls_branch.out_features != channels:
            raise ValueError(f'scoring={scoring!r} needs a {channels}-channel cls_branch, got '
                             f'{cls_branch.out_features} channels')
        if reg_branch is None:
            layers = []
            for _ in range(num_reg_fcs):
                layers += [nn.Linear(embed_dims, embed_dims), nn.ReLU()]
            reg_branch = nn.Sequential(*layers, nn.Linear(embed_dims, 4))
        self.cls_branch = cls_branch
        self.reg_branch = reg_branch

    def init_weights(self) -> None:
        # Xavier keeps the proposal features and query embeddings at unit scale, like the
        # other projections of the transformer (official _reset_parameters).
        nn.init.xavier_uniform_(self.memory_trans_fc.weight)
        nn.init.xavier_uniform_(self.pos_trans_fc.weight)
        # As the head's branches (official): scores start at the focal-loss prior 0.01, and
        # the first proposals are the anchor boxes themselves (zero box delta).
        nn.init.constant_(self.cls_branch.bias, bias_init_with_prob(0.01))
        constant_init(self.reg_branch[-1], 0, bias=0)

    def forward(self, memory: Tensor, memory_mask: Optional[Tensor],
                spatial_shape_list: Sequence[Tuple[int, int]]) -> Dict[str, Tensor]:
        """Score every encoder token's proposal and build the decoder inputs from the top-k.

        Args:
            memory (Tensor): (bs, num_tokens, dim) encoder output.
            memory_mask (Tensor | None): (bs, num_tokens), True at padding.
            spatial_shape_list (list[tuple[int, int]]): (H_l, W_l) per level.

        Returns:
            dict[str, Tensor]: ``query`` and ``query_pos`` (bs, k, dim), ``reference_points``
            (bs, k, 4) normalised (cx, cy, w, h), and for the encoder loss
            ``enc_outputs_class`` (bs, num_tokens, C) logits and ``enc_outputs_coord``
            (bs, num_tokens, 4) normalised boxes.
        """
        output_memory, proposals = self.proposals(memory, memory_mask, spatial_shape_list)
        enc_outputs_class = self.cls_branch(output_memory)
        enc_coords_unact = self.reg_branch(output_memory) + proposals
        _, topk_coords_unact = self.select(enc_outputs_class, enc_coords_unact)
        query_pos, query = self.queries(topk_coords_unact)
        return dict(query=query, query_pos=query_pos,
                    reference_points=topk_coords_unact.sigmoid(),
                    enc_outputs_class=enc_outputs_class,
                    enc_outputs_coord=enc_coords_unact.sigmoid())

    def proposals(self, memory: Tensor, memory_mask: Optional[Tensor],
                  spatial_shape_list: Sequence[Tuple[int, int]]) -> Tuple[Tensor, Tensor]:
        """One proposal per encoder token.

        Args:
            memory (Tensor): (bs, num_tokens, dim) encoder output.
            memory_mask (Tensor | None): (bs, num_tokens), True at padding.
            spatial_shape_list (list[tuple[int, int]]): (H_l, W_l) per level.

        Returns:
            tuple[Tensor, Tensor]:
            - output_memory (bs, num_tokens, dim): token features for the proposal head, zero
              (before the projection) where the proposal is unusable.
            - output_proposals (bs, num_tokens, 4): inverse-sigmoid (cx, cy, w, h), +inf at
              padded or out-of-range proposals, so that their predicted boxes saturate to 1.
              Built in float32, as in the official code.
        """
        bs = memory.size(0)
        device = memory.device
        boxes = []
        start = 0
        for lvl, (h, w) in enumerate(spatial_shape_list):
            if memory_mask is not None:
                level_mask = memory_mask[:, start:start + h * w].view(bs, h, w)
                # Normalise by the VALID size: centres in the padding fall outside (0, 1).
                scale = valid_size(level_mask).view(bs, 1, 1, 2)
            else:
                scale = torch.tensor([w, h], dtype=torch.float32, device=device).view(1, 1, 1, 2)
            grid_y, grid_x = torch.meshgrid(
                # = linspace(0, h - 1, h), but symbolic-size friendly (compile/export).
                torch.arange(h, dtype=torch.float32, device=device),
                torch.arange(w, dtype=torch.float32, device=device),
                indexing='ij')
            centre = (torch.stack([grid_x, grid_y], -1).expand(bs, -1, -1, -1) + 0.5) / scale
            size = torch.full_like(centre, self.base_size * 2.0**lvl)
            boxes.append(torch.cat([centre, size], -1).view(bs, -1, 4))
            start += h * w
        proposals = torch.cat(boxes, 1)
        low, high = self.valid_range
        valid = ((proposals > low) & (proposals < high)).all(-1, keepdim=True)
        proposals = torch.log(proposals / (1 - proposals))
        unusable = ~valid
        if memory_mask is not None:
            unusable = unusable | memory_mask.unsqueeze(-1)
        proposals = proposals.masked_fill(unusable, float('inf'))
        output_memory = memory.masked_fill(unusable, 0.0)
        output_memory = self.memory_trans_norm(self.memory_trans_fc(output_memory))
        return output_memory, proposals

    def select(self, scores: Tensor, coords_unact: Tensor) -> Tuple[Tensor, Tensor]:
        """Top-k proposals by channel 0 of ``scores``.

        Args:
            scores (Tensor): (bs, num_tokens, C) encoder classification logits (C = 1 for
                objectness; channel 0 is the official 'class 0' otherwise).
            coords_unact (Tensor): (bs, num_tokens, 4) inverse-sigmoid boxes.

        Returns:
            tuple[Tensor, Tensor]: indices (bs, k) and the selected inverse-sigmoid boxes
            (bs, k, 4), detached (the decoder must not back-propagate into the ranking).
        """
        k = self.num_queries
        if k > scores.size(1):
            raise ValueError(
                f'two-stage keeps num_queries={k} proposals but the encoder has only '
                f'{scores.size(1)} tokens for this input; lower num_queries or use larger '
                'images / more feature levels')
        topk = torch.topk(scores[..., 0], k, dim=1)[1]
        coords = torch.gather(coords_unact, 1, topk.unsqueeze(-1).expand(-1, -1, 4))
        return topk, coords.detach()

    def queries(self, coords_unact: Tensor) -> Tuple[Tensor, Tensor]:
        """Decoder (query_pos, query) from the selected boxes' sine embedding.

        Args:
            coords_unact (Tensor): (bs, k, 4) inverse-sigmoid boxes.

        Returns:
            tuple[Tensor, Tensor]: query_pos and query, each (bs, k, dim).
        """
        embed = self.pos_trans_norm(self.pos_trans_fc(self.box_sine_embedding(coords_unact)))
        return torch.split(embed, self.embed_dims, dim=-1)

    def box_sine_embedding(self, coords_unact: Tensor) -> Tensor:
        """Sine embedding of a box: ``d/2`` interleaved (sin, cos) features per coordinate.

        Args:
            coords_unact (Tensor): (bs, k, 4) inverse-sigmoid (cx, cy, w, h).

        Returns:
            Tensor: (bs, k, 2 * dim), coordinates in (cx, cy, w, h) order.
        """
        num_feats = self.embed_dims // 2
        dim_t = torch.arange(num_feats, dtype=torch.float32, device=coords_unact.device)
        dim_t = self.temperature**(2 * torch.div(dim_t, 2, rounding_mode='floor') / num_feats)
        pos = coords_unact.sigmoid()[..., None] * (2 * math.pi) / dim_t
        return torch.stack((pos[..., 0::2].sin(), pos[..., 1::2].cos()), -1).flatten(2)


def move_proposal_branches(state_dict: MutableMapping[str, Tensor], enc_index: int,
                           prefix: str = '') -> int:
    """Rename the encoder-proposal branches of the earlier layout, in place.

    They were the head's last branches, ``bbox_head.{cls,reg}_branches.<enc_index>.*`` (the
    layout of mmdet's ``DeformableDETR`` and of checkpoints written before the branches moved);
    they are now ``proposal_generator.{cls,reg}_branch.*``.

    Args:
        state_dict (MutableMapping[str, Tensor]): Weights, renamed in place.
        enc_index (int): Index of the encoder branches in the old layout (= the number of
            decoder layers).
        prefix (str): Prefix of the detector's keys in ``state_dict``.

    Returns:
        int: How many keys were renamed (0 for a state dict of the current layout).
    """
    old = re.compile(rf'^{re.escape(prefix)}bbox_head\.(cls|reg)_branches\.{enc_index}\.(.*)$')
    moves = [(key, m) for key in list(state_dict) for m in [old.match(key)] if m]
    for key, m in moves:
        state_dict[f'{prefix}proposal_generator.{m[1]}_branch.{m[2]}'] = state_dict.pop(key)
    return len(moves)


__all__ = ['DDETRProposalGenerator', 'SCORINGS', 'move_proposal_branches']

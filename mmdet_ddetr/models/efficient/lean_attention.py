"""Multi-head attention that computes only what a DETR layer uses: the attended values.

A CPU speed device, opt-in: configs select it with ``type='LeanMultiheadAttention'`` (the CPU
quickstart configs do); every layer defaults to mmcv's ``MultiheadAttention``.

mmcv's ``MultiheadAttention`` calls ``nn.MultiheadAttention`` with ``need_weights=True`` (its
default), so on every call torch materialises the softmax weights, averages them over the heads
and returns them, and mmcv throws them away. That forces torch's unfused path: on CPU a DETR
decoder's self-attention takes 1.7x the time of the fused ``scaled_dot_product_attention``
(2.5x for a 300 x 1050 co-attention). :class:`LeanMultiheadAttention` is a drop-in replacement
with the same constructor, the same parameters under the same state-dict keys (they stay in the
wrapped ``self.attn``, so checkpoints of either load into the other) and the same outputs:

* without attention dropout (inference, or ``attn_drop=0``) it runs the fused kernel;
* with attention dropout on CPU it runs the attention explicitly, with :func:`fast_dropout`
  on the weights (the fused kernel would draw the slow Bernoulli mask);
* the projection and residual dropouts are :class:`FastDropout` as well.

Setting ``record_weights`` makes it also store the per-head softmax weights of the next calls
(``recorded_weights``), computed next to the unchanged output, for visualisation.
"""
import math
import warnings
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from mmcv.cnn.bricks.transformer import MultiheadAttention
from torch import Tensor

from mmdet.registry import MODELS

from .fast_dropout import fast_dropout, use_fast_dropout


def attention_bias(attn_mask: Optional[Tensor], key_padding_mask: Optional[Tensor],
                   bs: int, num_heads: int, num_queries: int, num_keys: int,
                   dtype: torch.dtype) -> Optional[Tensor]:
    """Merge ``nn.MultiheadAttention``-style masks into one additive bias.

    Args:
        attn_mask: None, or bool (True = not allowed) / float (added to the logits) of shape
            (num_queries, num_keys) or (bs * num_heads, num_queries, num_keys).
        key_padding_mask: None, or bool (True = padding) / float of shape (bs, num_keys).
        bs, num_heads, num_queries, num_keys: Attention sizes.
        dtype: Floating dtype of the logits.

    Returns:
        Optional[Tensor]: None, or a float bias broadcastable to
        (bs, num_heads, num_queries, num_keys) with ``-inf`` where attention is not allowed.
    """
    def additive(mask: Tensor) -> Tensor:
        if mask.dtype == torch.bool:
            return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
                mask, float('-inf'))
        return mask.to(dtype)

    bias = None
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            attn_mask = attn_mask.view(1, 1, num_queries, num_keys)
        elif attn_mask.dim() == 3 and attn_mask.size(0) == bs * num_heads:
            attn_mask = attn_mask.view(bs, num_heads, num_queries, num_keys)
        else:
            raise ValueError(f'attn_mask of shape {tuple(attn_mask.shape)} must be '
                             f'({num_queries}, {num_keys}) or '
                             f'({bs * num_heads}, {num_queries}, {num_keys})')
        bias = additive(attn_mask)
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (bs, num_keys):
            raise ValueError(f'key_padding_mask of shape {tuple(key_padding_mask.shape)} must '
                             f'be ({bs}, {num_keys})')
        padding = additive(key_padding_mask.view(bs, 1, 1, num_keys))
        bias = padding if bias is None else bias + padding
    return bias


@MODELS.register_module()
class LeanMultiheadAttention(MultiheadAttention):
    """mmcv ``MultiheadAttention`` without the discarded attention weights.

    Args: those of :class:`mmcv.cnn.bricks.transformer.MultiheadAttention`; ``kdim`` /
    ``vdim`` other than ``embed_dims``, ``add_bias_kv`` and ``add_zero_attn`` are refused.
    """

    def __init__(self, embed_dims: int, num_heads: int, *args, **kwargs) -> None:
        for name in ('kdim', 'vdim'):
            if kwargs.get(name) not in (None, embed_dims):
                raise ValueError(f'LeanMultiheadAttention needs {name} == embed_dims '
                                 f'({embed_dims}), got {kwargs[name]}')
        for name in ('add_bias_kv', 'add_zero_attn'):
            if kwargs.get(name):
                raise ValueError(f'LeanMultiheadAttention does not support {name}=True; use '
                                 'mmcv MultiheadAttention')
        super().__init__(embed_dims, num_heads, *args, **kwargs)
        use_fast_dropout(self)
        self.record_weights = False
        self.recorded_weights: Optional[Tensor] = None

    def _project(self, query: Tensor, key: Tensor, value: Tensor,
                 shared_qk: bool) -> Tuple[Tensor, Tensor, Tensor]:
        """Input projections, (bs, L, dim) each -> (bs, heads, L, head_dim) each.

        When queries and keys are the same tensor (self-attention), their two projections run
        as one matrix product."""
        dim = self.embed_dims
        weight, bias = self.attn.in_proj_weight, self.attn.in_proj_bias

        def part(i: int, n: int = 1) -> Tuple[Tensor, Optional[Tensor]]:
            rows = slice(i * dim, (i + n) * dim)
            return weight[rows], None if bias is None else bias[rows]

        if shared_qk:
            q, k = F.linear(query, *part(0, 2)).chunk(2, dim=-1)
        else:
            q, k = F.linear(query, *part(0)), F.linear(key, *part(1))
        v = F.linear(value, *part(2))

        def heads(x: Tensor) -> Tensor:
            return x.unflatten(-1, (self.num_heads, self.attn.head_dim)).transpose(1, 2)

        return heads(q), heads(k), heads(v)

    def _logits(self, q: Tensor, k: Tensor, bias: Optional[Tensor]) -> Tensor:
        """q k^T / sqrt(d) + bias, (bs, heads, num_queries, num_keys), scaled as torch does."""
        logits = torch.matmul(q * (1.0 / math.sqrt(self.attn.head_dim)), k.transpose(-2, -1))
        return logits if bias is None else logits + bias

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor]) -> Tensor:
        """softmax(q k^T / sqrt(d) + bias), dropped out in training, times v."""
        drop = self.attn.dropout if self.training else 0.0
        if drop > 0 and q.device.type == 'cpu':
            weights = fast_dropout(self._logits(q, k, bias).softmax(dim=-1), drop)
            return torch.matmul(weights, v)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=drop)

    def forward(self,
                query: Tensor,
                key: Optional[Tensor] = None,
                value: Optional[Tensor] = None,
                identity: Optional[Tensor] = None,
                query_pos: Optional[Tensor] = None,
                key_pos: Optional[Tensor] = None,
                attn_mask: Optional[Tensor] = None,
                key_padding_mask: Optional[Tensor] = None,
                **kwargs) -> Tensor:
        """Same contract as mmcv's ``MultiheadAttention.forward``.

        Args:
            query: (bs, num_queries, dim) ((num_queries, bs, dim) unless ``batch_first``).
            key / value: (bs, num_keys, dim); default to ``query`` / ``key``.
            identity: Residual added to the output; defaults to ``query``.
            query_pos / key_pos: Positional encodings added to query / key (``key_pos``
                defaults to ``query_pos`` when the shapes agree).
            attn_mask: bool (True = not allowed) or additive float, (num_queries, num_keys)
                or (bs * num_heads, num_queries, num_keys).
            key_padding_mask: (bs, num_keys), True = padding.

        Returns:
            Tensor: same layout as ``query``.
        """
        key = query if key is None else key
        value = key if value is None else value
        identity = query if identity is None else identity
        if key_pos is None and query_pos is not None:
            if query_pos.shape == key.shape:
                key_pos = query_pos
            else:
                warnings.warn(f'position encoding of key is missing in '
                              f'{self.__class__.__name__}.')
        shared_qk = key is query and key_pos is query_pos
        if query_pos is not None:
            query = query + query_pos
        if key_pos is not None:
            key = query if shared_qk else key + key_pos
        if not self.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        bs, num_queries, _ = query.shape
        num_keys = key.size(1)

        q, k, v = self._project(query, key, value, shared_qk)
        bias = attention_bias(attn_mask, key_padding_mask, bs, self.num_heads, num_queries,
                              num_keys, q.dtype)
        out = self._attend(q, k, v, bias)
        if self.record_weights:
            with torch.no_grad():
                self.recorded_weights = self._logits(q, k, bias).softmax(-1)
        out = self.attn.out_proj(out.transpose(1, 2).flatten(2))
        if not self.batch_first:
            out = out.transpose(0, 1)
        return identity + self.dropout_layer(self.proj_drop(out))

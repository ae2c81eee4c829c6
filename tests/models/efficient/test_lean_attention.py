"""LeanMultiheadAttention equals mmcv's MultiheadAttention, in float64."""
import copy

import pytest
import torch
from mmcv.cnn.bricks.transformer import MultiheadAttention

from mmdet_ddetr.models.efficient import LeanMultiheadAttention, lean_attention
from mmdet_ddetr.models.efficient import fast_dropout as fast_dropout_module

BS, NQ, NK, DIM, HEADS = 2, 7, 11, 32, 4


def pair(batch_first=True, dropout=0.1):
    cfg = dict(embed_dims=DIM, num_heads=HEADS, dropout=dropout, batch_first=batch_first)
    ref = MultiheadAttention(**copy.deepcopy(cfg)).double()
    lean = LeanMultiheadAttention(**copy.deepcopy(cfg)).double()
    lean.load_state_dict(ref.state_dict())
    return ref, lean


def seq(n, batch_first):
    shape = (BS, n, DIM) if batch_first else (n, BS, DIM)
    return torch.randn(shape, dtype=torch.float64)


def cases(batch_first):
    torch.manual_seed(0)
    q, qp, k, kp = seq(NQ, batch_first), seq(NQ, batch_first), seq(NK, batch_first), \
        seq(NK, batch_first)
    padding = torch.zeros(BS, NK, dtype=torch.bool)
    padding[1, -4:] = True
    causal = torch.ones(NQ, NQ, dtype=torch.bool).triu(1)
    return {
        'self': dict(query=q, query_pos=qp),
        'self bool mask': dict(query=q, query_pos=qp, attn_mask=causal),
        'cross float bias': dict(query=q, key=k, value=k, query_pos=qp, key_pos=kp,
                                 attn_mask=torch.randn(BS * HEADS, NQ, NK, dtype=torch.float64)),
        'cross padding': dict(query=q, key=k, value=k, query_pos=qp, key_pos=kp,
                              key_padding_mask=padding),
        'cross identity': dict(query=q, key=k, value=k, identity=torch.zeros_like(q)),
    }


@pytest.mark.parametrize('batch_first', [True, False])
def test_equals_mmcv_in_eval(batch_first):
    ref, lean = pair(batch_first)
    ref.eval(), lean.eval()
    for name, kwargs in cases(batch_first).items():
        torch.testing.assert_close(lean(**kwargs), ref(**kwargs), rtol=0, atol=1e-13,
                                   msg=name)


def test_training_path_equals_mmcv_without_the_random_mask(monkeypatch):
    """With attention dropout, training runs the attention explicitly (not the fused kernel);
    with the masks made the identity its maths must be mmcv's."""
    no_drop = lambda x, p, training=True: x  # noqa: E731
    monkeypatch.setattr(lean_attention, 'fast_dropout', no_drop)
    monkeypatch.setattr(fast_dropout_module, 'fast_dropout', no_drop)
    ref, lean = pair()
    ref.eval(), lean.train()
    for name, kwargs in cases(True).items():
        torch.testing.assert_close(lean(**kwargs), ref(**kwargs), rtol=0, atol=1e-13,
                                   msg=name)


def test_training_drops_attention_weights_and_backpropagates():
    ref, lean = pair(dropout=0.5)
    lean.train()
    kwargs = cases(True)['cross padding']
    torch.manual_seed(1)
    a = lean(**kwargs)
    b = lean(**kwargs)
    assert not torch.equal(a, b)
    a.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in lean.parameters())


def test_recording_keeps_the_output_and_records_softmax_weights():
    _, lean = pair()
    lean.eval()
    kwargs = cases(True)['cross padding']
    out = lean(**kwargs)
    lean.record_weights = True
    assert torch.equal(lean(**kwargs), out)
    w = lean.recorded_weights
    assert w.shape == (BS, HEADS, NQ, NK)
    torch.testing.assert_close(w.sum(-1), torch.ones(BS, HEADS, NQ, dtype=torch.float64))
    assert (w[1, :, :, -4:] == 0).all()  # padded keys get no weight


def test_refuses_what_it_does_not_implement():
    with pytest.raises(ValueError, match='add_bias_kv'):
        LeanMultiheadAttention(DIM, HEADS, add_bias_kv=True)
    with pytest.raises(ValueError, match='kdim'):
        LeanMultiheadAttention(DIM, HEADS, kdim=16)
    _, lean = pair()
    with pytest.raises(ValueError, match='attn_mask of shape'):
        lean(query=seq(NQ, True), attn_mask=torch.zeros(3, NQ, NQ))

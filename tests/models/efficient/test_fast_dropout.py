"""fast_dropout: the dropout distribution and gradient, the module swap and the opt-in layer
types that use it."""
import pytest
import torch
from mmcv.cnn.bricks.transformer import FFN
from torch import nn

from mmdet_ddetr.models.efficient.fast_dropout import (FastDropout, dropped_levels,
                                                       fast_dropout, use_fast_dropout)


def test_identity_when_not_training_or_p_zero():
    x = torch.randn(5, 7)
    assert fast_dropout(x, 0.3, training=False) is x
    assert fast_dropout(x, 0.0) is x


def test_p_one_drops_everything_and_bad_p_is_refused():
    x = torch.randn(4, 3, requires_grad=True)
    assert torch.equal(fast_dropout(x, 1.0), torch.zeros(4, 3))
    for p in (-0.1, 1.5):
        with pytest.raises(ValueError, match='between 0 and 1'):
            fast_dropout(x, p)


@pytest.mark.parametrize('p', [0.1, 0.5])
def test_drop_rate_scale_and_gradient(p):
    torch.manual_seed(0)
    x = torch.rand(1000, 1000, dtype=torch.float64) + 1.0  # never 0, so zeros = dropped
    x.requires_grad_()
    y = fast_dropout(x, p)
    dropped = y == 0
    levels = 2**16
    p_repr = dropped_levels(p) / levels
    assert abs(p_repr - p) <= 0.5 / levels
    # 1e6 Bernoulli draws: the rate is within 5 standard deviations of p.
    sigma = (p * (1 - p) / x.numel())**0.5
    assert abs(dropped.double().mean().item() - p) < 5 * sigma
    scale = levels / (levels - dropped_levels(p))
    torch.testing.assert_close(y[~dropped], x[~dropped] * scale, rtol=1e-15, atol=0)
    y.backward(torch.ones_like(y))
    assert torch.equal(x.grad == 0, dropped)
    torch.testing.assert_close(x.grad[~dropped], torch.full_like(x.grad[~dropped], scale))


def test_masks_are_independent_and_follow_the_seed():
    x = torch.ones(64, 64)
    torch.manual_seed(3)
    a, b = fast_dropout(x, 0.5), fast_dropout(x, 0.5)
    torch.manual_seed(3)
    assert torch.equal(fast_dropout(x, 0.5), a)
    assert not torch.equal(a, b)
    # Neighbouring elements share a 64-bit draw but not a mask bit.
    pairs = (a.flatten()[0::4] == 0) & (a.flatten()[1::4] == 0)
    assert 0.15 < pairs.float().mean().item() < 0.35


def test_use_fast_dropout_swaps_every_dropout_and_keeps_weights():
    torch.manual_seed(0)
    ffn = FFN(embed_dims=8, feedforward_channels=16, ffn_drop=0.2,
              dropout_layer=dict(type='Dropout', drop_prob=0.3))
    state = {k: v.clone() for k, v in ffn.state_dict().items()}
    before = [m.p for m in ffn.modules() if isinstance(m, nn.Dropout)]
    use_fast_dropout(ffn)
    drops = [m for m in ffn.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(type(m) is FastDropout for m in drops)
    assert [m.p for m in drops] == before == [0.2, 0.2, 0.3]
    assert all(torch.equal(state[k], v) for k, v in ffn.state_dict().items())
    ffn.eval()
    x = torch.randn(2, 5, 8)
    assert torch.equal(ffn(x), ffn.layers(x) + x)


def test_compiled_draws_one_mask_for_forward_and_backward():
    """Under torch.compile (inductor, whose partitioner recomputes cheap ops for the backward)
    the mask comes from the opaque seeded op: one graph, and the gradient is masked exactly
    where the output is, i.e. the mask is not drawn a second time for the backward."""
    import torch._dynamo

    from mmdet_ddetr.models.efficient.fast_dropout import fast_dropout

    def f(x):
        y = fast_dropout(x, 0.1)
        return (y * y).sum(), y

    torch._dynamo.reset()
    compiled = torch.compile(f, backend='inductor', dynamic=True, fullgraph=True)
    torch.manual_seed(0)
    x = (torch.rand(16, 33, 65) + 0.5).requires_grad_()
    loss, y = compiled(x)
    loss.backward()
    scale = 65536 / (65536 - round(0.1 * 65536))
    kept = y != 0
    assert 0.85 < kept.float().mean().item() < 0.95
    torch.testing.assert_close(y, x.detach() * kept * scale, rtol=0, atol=0)
    torch.testing.assert_close(x.grad, 2 * y.detach() * kept * scale, rtol=1e-6, atol=0)


@pytest.mark.parametrize('fast_type, reference', [
    ('FastDropoutFFN', dict(type='FFN', embed_dims=8, feedforward_channels=16, ffn_drop=0.2)),
    ('FastDropoutMSDeformAttention', dict(type='MSDeformAttention', embed_dims=8, num_heads=2,
                                          num_levels=1, num_points=2, dropout=0.2,
                                          batch_first=True)),
])
def test_opt_in_types_are_the_reference_module_with_fast_dropouts(fast_type, reference):
    """Same parameters, keys and seeded initial weights as the reference type; only the
    dropouts differ (and the reference keeps torch's)."""
    from mmdet.registry import MODELS
    torch.manual_seed(0)
    ref = MODELS.build(dict(reference))
    ref.init_weights()
    torch.manual_seed(0)
    fast = MODELS.build(dict(reference, type=fast_type))
    fast.init_weights()
    assert isinstance(fast, type(ref))
    ref_state, fast_state = ref.state_dict(), fast.state_dict()
    assert list(ref_state) == list(fast_state)
    assert all(torch.equal(ref_state[k], fast_state[k]) for k in ref_state)
    ref_drops = [m for m in ref.modules() if isinstance(m, nn.Dropout)]
    fast_drops = [m for m in fast.modules() if isinstance(m, nn.Dropout)]
    assert ref_drops and not any(isinstance(m, FastDropout) for m in ref_drops)
    assert [type(m) for m in fast_drops] == [FastDropout] * len(ref_drops)
    assert [m.p for m in fast_drops] == [m.p for m in ref_drops]

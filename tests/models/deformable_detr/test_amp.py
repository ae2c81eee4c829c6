"""bf16 autocast on CPU (the GPU AMP configs use the same code paths): training steps stay
finite, losses are float32, and predictions stay close to float32 ones."""
import pytest
import torch

from tests.conftest import build_model, make_batch, small_ddetr_cfg


@pytest.mark.parametrize('variant', [dict(), dict(with_box_refine=True, as_two_stage=True)],
                         ids=['multi-scale', 'refine-twostage'])
def test_bf16_training_steps_are_finite(variant):
    model = build_model(small_ddetr_cfg(**variant))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = make_batch([(64, 80), (48, 64)], boxes_per_image=[3, 2])
    for _ in range(3):
        data = model.data_preprocessor(batch, training=True)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            losses = model(**data, mode='loss')
        assert all(v.dtype == torch.float32 for v in losses.values()), \
            {k: v.dtype for k, v in losses.items()}
        total = sum(losses.values())
        assert torch.isfinite(total)
        optimizer.zero_grad()
        total.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters()
                   if p.grad is not None)
        optimizer.step()


def test_bf16_predictions_close_to_fp32():
    model = build_model(small_ddetr_cfg(with_box_refine=True)).eval()
    for branch in model.bbox_head.reg_branches:  # make the boxes depend on the features
        branch[-1].weight.data.normal_(std=0.05)
    batch = make_batch([(64, 80)])
    data = model.data_preprocessor(batch)
    with torch.no_grad():
        feats = model.extract_feat(data['inputs'])
        ref = model.forward_transformer(feats, data['data_samples'])
        cls32, box32 = model.bbox_head(ref['hidden_states'], ref['references'])
        with torch.autocast('cpu', dtype=torch.bfloat16):
            feats = model.extract_feat(data['inputs'])
            out = model.forward_transformer(feats, data['data_samples'])
            cls16, box16 = model.bbox_head(out['hidden_states'], out['references'])
    # bf16 keeps ~3 significant digits: boxes (normalised) within 0.02, scores within 0.05.
    torch.testing.assert_close(box16[-1].float(), box32[-1], atol=0.02, rtol=0)
    torch.testing.assert_close(cls16[-1].float().sigmoid(), cls32[-1].sigmoid(), atol=0.05,
                               rtol=0)

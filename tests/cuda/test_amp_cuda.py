"""Mixed precision on CUDA: 30 training steps of the synthetic quickstart models (Deformable
DETR refine + two-stage, SMCA-DETR) under float16 AMP (with a gradient scaler) and bfloat16 AMP.

Per step: the loss is finite and, after unscaling, so is every gradient. The float16 scaler
starts at 2**10 instead of torch's 2**16, so that a step skipped while the scale calibrates
would be a failure of the model, not of the scaler's start value. Over the 30 steps (one fixed
batch, the configs' AdamW lr and grad clip 0.1) the mean loss of the last 5 steps is below
that of the first 5. Then, with the trained weights, the autocast predictions of the last
decoder layer stay close to float32 ones: boxes (normalised cx, cy, w, h) within 5e-3 (fp16) /
2e-2 (bf16), class probabilities within 1e-2 / 5e-2 (absolute; bf16 keeps about 3 significant
digits, fp16 about 4), for at least 90 % of the queries. The two precisions' queries are paired
one to one by box distance first: the two-stage model picks its queries by a top-k of encoder
scores, and scores that tie to within bf16's precision can swap places or swap a proposal at
the cut (seen on the CPU path: box error 0.76 when compared index by index, SMCA 3e-3).
"""
import copy
import statistics

import pytest
import torch
from mmengine.config import Config

from mmdet.registry import MODELS
from tests.conftest import REPO, make_batch
from .conftest import record

pytestmark = pytest.mark.cuda

CONFIGS = {
    'ddetr-refine-twostage':
    'configs/deformable_detr/deformable-detr-refine-twostage_r18_1xb4-4e_synthetic.py',
    'smca': 'configs/smca_detr/smca-detr_r18_1xb4-quickstart_synthetic.py',
}
STEPS = 30
#: dtype -> (box bound, probability bound), see the module docstring.
PREDICTION_BOUNDS = {torch.float16: (5e-3, 1e-2), torch.bfloat16: (2e-2, 5e-2)}


def quickstart(name: str):
    cfg = Config.fromfile(str(REPO / CONFIGS[name]))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    return model, cfg


def synthetic_batch():
    """Four 128 px images with 1-4 boxes of the 5 quickstart classes (fixed seed)."""
    return make_batch([(128, 128)] * 4, num_classes=5, boxes_per_image=[3, 2, 4, 1], seed=3)


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16], ids=['fp16', 'bf16'])
@pytest.mark.parametrize('name', list(CONFIGS))
def test_amp_training_steps(device, name, dtype):
    model, cfg = quickstart(name)
    model.to(device).train()
    optim = cfg.optim_wrapper.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=optim.lr, weight_decay=optim.weight_decay)
    scaler = torch.amp.GradScaler(device.type, init_scale=2.0**10,
                                  enabled=dtype == torch.float16)
    losses = []
    for step in range(STEPS):
        data = model.data_preprocessor(copy.deepcopy(synthetic_batch()), training=True)
        with torch.autocast(device.type, dtype=dtype):
            parts = model(**data, mode='loss')
        loss, _ = model.parse_losses(parts)
        assert loss.dtype == torch.float32, loss.dtype
        assert torch.isfinite(loss), f'step {step}: loss {loss.item()}'
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        bad = [n for n, p in model.named_parameters()
               if p.grad is not None and not torch.isfinite(p.grad).all()]
        assert not bad, f'step {step}: non-finite gradients in {bad[:5]}'
        torch.nn.utils.clip_grad_norm_(params, cfg.optim_wrapper.clip_grad.max_norm)
        scaler.step(optimizer)
        scaler.update()
        losses.append(loss.item())
    first, last = statistics.mean(losses[:5]), statistics.mean(losses[-5:])
    record(f'amp_{name}_{str(dtype)[6:]}', first=first, last=last, losses=losses)
    assert last < first, f'loss did not decrease: first 5 {losses[:5]}, last 5 {losses[-5:]}'

    model.eval()
    data = model.data_preprocessor(copy.deepcopy(synthetic_batch()), training=False)
    with torch.no_grad():
        cls32, box32 = model(**data, mode='tensor')[:2]
        with torch.autocast(device.type, dtype=dtype):
            cls16, box16 = model(**data, mode='tensor')[:2]
    box_err, prob_err = paired_errors(box16[-1].float(), cls16[-1].float().sigmoid(),
                                      box32[-1], cls32[-1].sigmoid())
    box_bound, prob_bound = PREDICTION_BOUNDS[dtype]
    close = ((box_err <= box_bound) & (prob_err <= prob_bound)).float().mean().item()
    record(f'amp_{name}_{str(dtype)[6:]}_predictions', close=close,
           box_err_median=box_err.median().item(), box_err_max=box_err.max().item(),
           prob_err_median=prob_err.median().item(), prob_err_max=prob_err.max().item())
    assert close >= 0.9, \
        f'autocast vs float32: {close:.0%} of the queries within boxes {box_bound} and ' \
        f'probabilities {prob_bound}; box errors median {box_err.median():.2e} max ' \
        f'{box_err.max():.2e}, probability errors max {prob_err.max():.2e}'


def paired_errors(box_a, prob_a, box_b, prob_b):
    """Per-query max abs box and probability differences after pairing each image's queries
    one to one by L1 box distance (Hungarian), as (num_images * num_queries,) tensors."""
    from scipy.optimize import linear_sum_assignment
    box_errs, prob_errs = [], []
    for i in range(box_a.shape[0]):
        cost = torch.cdist(box_a[i].double(), box_b[i].double(), p=1).cpu().numpy()
        rows, cols = linear_sum_assignment(cost)
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
        box_errs.append((box_a[i][rows] - box_b[i][cols]).abs().amax(-1).cpu())
        prob_errs.append((prob_a[i][rows] - prob_b[i][cols]).abs().amax(-1).cpu())
    return torch.cat(box_errs), torch.cat(prob_errs)

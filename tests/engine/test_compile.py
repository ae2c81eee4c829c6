"""torch.compile of the detectors: one graph per compiled function (fullgraph), no
recompilation for a new image size, train step and predict run."""
import copy

import pytest
import torch
import torch._dynamo

from mmdet_ddetr.engine.compile import compile_detector
from tests.conftest import build_model, make_batch, small_ddetr_cfg
from tests.models.smca.common import small_smca_cfg


class CountingBackend:
    """aot_eager (AOTAutograd traces forward and backward through the op's fake kernels) that
    counts the graphs it is handed: one per compilation, recompilations included."""

    def __init__(self):
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        from torch._dynamo.backends.debugging import aot_eager
        return aot_eager(gm, example_inputs)


def _train_and_predict(model, sizes):
    batch = make_batch(sizes)
    model.train()
    losses = model.loss(batch['inputs'], copy.deepcopy(batch['data_samples']))
    loss = sum(v for k, v in losses.items() if 'loss' in k)
    loss.backward()
    model.eval()
    with torch.no_grad():
        preds = model.predict(batch['inputs'], copy.deepcopy(batch['data_samples']))
    return loss.detach(), preds


def _without_dropout(cfg):
    """The config with every dropout probability at 0 (a compiled graph draws its dropout
    masks from another random stream than eager mode, so only then can losses be compared)."""
    if isinstance(cfg, dict):
        return {k: 0.0 if k in ('dropout', 'ffn_drop') else _without_dropout(v)
                for k, v in cfg.items()}
    if isinstance(cfg, (list, tuple)):
        return type(cfg)(_without_dropout(v) for v in cfg)
    return cfg


def _smca_ms_derived_strides():
    """Multi-scale SMCA with ``feat_strides='auto'``: the strides are derived inside the graph
    from symbolic shapes, which must not specialise it to one image size."""
    cfg = small_smca_cfg(multi_scale=True)
    cfg['decoder']['feat_strides'] = 'auto'
    return cfg


@pytest.mark.parametrize('cfg', [
    pytest.param(lambda: small_ddetr_cfg(num_levels=1), id='ddetr-single-scale'),
    pytest.param(lambda: small_ddetr_cfg(with_box_refine=True, as_two_stage=True),
                 id='ddetr-refine-twostage', marks=pytest.mark.slow),
    pytest.param(lambda: _smca_ms_derived_strides(), id='smca-ms', marks=pytest.mark.slow),
])
def test_compiled_train_and_predict_no_graph_break_no_recompile(cfg):
    torch._dynamo.reset()
    compiled = build_model(_without_dropout(cfg()))
    eager = copy.deepcopy(compiled)
    backend = CountingBackend()
    # fullgraph=True: any graph break inside the backbone or the transformer is an error.
    compile_detector(compiled, dict(backend=backend, fullgraph=True))
    # Every level (strides 8 to 64) at least 2 cells on each side, in both batches: dynamo
    # specialises a dimension whose size is 1 (0/1 specialisation), so a 1-cell level would
    # recompile for any image size that makes it 2 cells (64 px images give the stride-64 level
    # one cell; real inputs, hundreds of pixels, never do). Height and width differ and swap.
    sizes_a = [(160, 224), (144, 208)]
    sizes_b = [(224, 160), (208, 144)]
    loss, preds = _train_and_predict(compiled, sizes_a)
    graphs_after_first_size = backend.graphs
    # Same maths as eager: equal loss (float32 reassociation at most) and detections.
    eager_loss, eager_preds = _train_and_predict(eager, sizes_a)
    torch.testing.assert_close(loss, eager_loss, rtol=1e-6, atol=0)
    for ours, ref in zip(preds, eager_preds):
        torch.testing.assert_close(ours.pred_instances.bboxes, ref.pred_instances.bboxes,
                                   rtol=1e-5, atol=1e-4)
    # extract_feat and forward_transformer for training and for inference (BN/dropout modes
    # differ), each one whole graph (fullgraph=True).
    assert graphs_after_first_size > 0
    loss_b, preds_b = _train_and_predict(compiled, sizes_b)
    assert backend.graphs == graphs_after_first_size, 'a new image size recompiled'
    assert torch.isfinite(loss_b) and len(preds_b) == 2
    assert all(len(p.pred_instances.scores) > 0 for p in preds_b)


def test_compile_detector_rejects_a_non_detector():
    with pytest.raises(TypeError, match='Linear has no'):
        compile_detector(torch.nn.Linear(2, 2))

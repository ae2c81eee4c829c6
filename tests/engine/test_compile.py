"""torch.compile of the detectors: one graph per compiled function, no recompilation for new
image sizes, train step and predict equal to eager."""
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


def _no_dropout(model):
    """Eager CPU dropout draws its masks differently from the compiled one: compare without."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return model


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


@pytest.mark.parametrize('cfg', [
    pytest.param(lambda: small_ddetr_cfg(num_levels=1), id='ddetr-single-scale'),
    pytest.param(lambda: small_ddetr_cfg(with_box_refine=True, as_two_stage=True),
                 id='ddetr-refine-twostage', marks=pytest.mark.slow),
    pytest.param(lambda: small_smca_cfg(multi_scale=True), id='smca-ms',
                 marks=pytest.mark.slow),
])
def test_compiled_train_and_predict_no_graph_break_no_recompile(cfg):
    torch._dynamo.reset()
    eager = _no_dropout(build_model(cfg()))
    compiled = _no_dropout(build_model(cfg()))
    backend = CountingBackend()
    # fullgraph=True: any graph break inside the backbone or the transformer is an error.
    compile_detector(compiled, dict(backend=backend, fullgraph=True))
    sizes_a = [(64, 80), (56, 72)]
    sizes_b = [(96, 64), (80, 64)]
    loss, preds = _train_and_predict(compiled, sizes_a)
    graphs_after_first_size = backend.graphs
    # extract_feat and forward_transformer for training and for inference (BN/dropout modes
    # differ), each one whole graph (fullgraph=True).
    assert graphs_after_first_size > 0
    loss_b, preds_b = _train_and_predict(compiled, sizes_b)
    assert backend.graphs == graphs_after_first_size, 'a new image size recompiled'
    ref_loss_b, ref_preds_b = _train_and_predict(eager, sizes_b)
    torch.testing.assert_close(loss_b, ref_loss_b, rtol=1e-4, atol=1e-5)
    for mine, ref in zip(preds_b, ref_preds_b):
        torch.testing.assert_close(mine.pred_instances.scores, ref.pred_instances.scores,
                                   rtol=1e-4, atol=1e-5)


def test_compile_detector_rejects_a_non_detector():
    with pytest.raises(TypeError, match='Linear has no'):
        compile_detector(torch.nn.Linear(2, 2))

"""torch.compile of the detectors: one graph per compiled function (fullgraph), no
recompilation for a new image size, train step and predict run."""
import copy

import pytest
import torch
import torch._dynamo

from mmdet_ddetr.engine.compile import compile_detector
from tests.conftest import build_model, make_batch, small_ddetr_cfg
from tests.models.smca_detr.common import small_smca_cfg


class CountingBackend:
    """aot_eager (AOTAutograd traces forward and backward through the op's fake kernels), or
    ``inner``, counting the graphs it is handed: one per compilation, recompilations
    included."""

    def __init__(self, inner=None):
        self.graphs = 0
        self.inner = inner

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        if self.inner is not None:
            return self.inner(gm, example_inputs)
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


def test_config_compile_compiles_the_tensor_core_for_training_and_testing(tmp_path):
    """``compile=...`` in a config, run by the configs' RegionalCompileRunner: extract_feat and
    forward_transformer are compiled (train_step is not: mmengine's own compile would trace
    the matching and the optimizer too), and training, validation and testing run."""
    from mmengine.registry import RUNNERS

    from mmdet_ddetr.datasets import generate_synthetic_dataset
    from mmdet_ddetr.engine import RegionalCompileRunner
    from tests.runner.test_ddetr_runner_e2e import tiny_cfg

    generate_synthetic_dataset(str(tmp_path / 'data'), seed=3, num_train=4, num_val=2,
                               img_size=96)
    cfg = tiny_cfg(tmp_path / 'data', tmp_path / 'work')
    cfg.train_dataloader.batch_size = 2
    assert cfg.runner_type == 'RegionalCompileRunner'  # from configs/_base_/default_runtime.py
    # In mmengine's root registry: tools/train.py builds the runner before any default scope
    # exists, and a name registered only in mmdet's registry is then not found.
    assert RUNNERS.module_dict['RegionalCompileRunner'] is RegionalCompileRunner
    # A config holds names, not objects (the Runner dumps it): register the counter as one.
    # Dynamo's graphs are run as they are (no AOTAutograd): this test is about the wiring.
    backend = CountingBackend(inner=lambda gm, example_inputs: gm.forward)
    torch._dynamo.reset()
    torch._dynamo.backends.registry._BACKENDS.pop('counting_eager', None)
    torch._dynamo.register_backend(backend, name='counting_eager')
    cfg.compile = dict(backend='counting_eager', fullgraph=True)
    runner = RUNNERS.build(cfg)
    assert isinstance(runner, RegionalCompileRunner)
    runner.train()
    detector = runner.model
    assert 'train_step' not in vars(detector), 'mmengine compiled the whole train_step'
    assert detector._compile_cfg == dict(dynamic=True, backend='counting_eager',
                                         fullgraph=True)
    assert backend.graphs > 0
    graphs_after_training = backend.graphs

    # Testing alone (tools/test.py --compile; mmengine's Runner compiles for training only).
    torch._dynamo.reset()
    cfg.work_dir = str(tmp_path / 'test')
    tester = RUNNERS.build(cfg)
    metrics = tester.test()
    assert 'coco/bbox_mAP' in metrics
    assert tester.model._compile_cfg is not None
    assert backend.graphs > graphs_after_training


def _two_levels_two_points(cfg):
    """Two levels of two points: the lowered sampling is a 16-term sum instead of 64, which
    inductor compiles ~4x faster (the terms are what its compile time grows with)."""
    for coder, attn in (('encoder', 'self_attn_cfg'), ('decoder', 'cross_attn_cfg')):
        cfg[coder]['layer_cfg'][attn]['num_points'] = 2
    return cfg


@pytest.mark.slow
@pytest.mark.parametrize('cfg', [
    pytest.param(lambda: _two_levels_two_points(small_ddetr_cfg(num_levels=2,
                                                                with_box_refine=True)),
                 id='ddetr-refine'),
    pytest.param(lambda: small_smca_cfg(), id='smca-single-scale'),
])
def test_inductor_train_and_predict(cfg):
    """What --compile gives users: inductor (C++ code, the deformable sampling lowered to the
    fused corner sum) for a training step and predict, at two image sizes, against eager."""
    torch._dynamo.reset()
    compiled = build_model(_without_dropout(cfg()))
    eager = copy.deepcopy(compiled)
    compile_detector(compiled, dict(fullgraph=True))
    for sizes in ([(160, 224), (144, 208)], [(224, 160), (208, 144)]):
        loss, preds = _train_and_predict(compiled, sizes)
        eager_loss, eager_preds = _train_and_predict(eager, sizes)
        # float32 sums in another order (fused kernels, the corner sum): ~1e-6 relative.
        torch.testing.assert_close(loss, eager_loss, rtol=1e-5, atol=0)
        for ours, ref in zip(preds, eager_preds):
            torch.testing.assert_close(ours.pred_instances.bboxes, ref.pred_instances.bboxes,
                                       rtol=1e-4, atol=1e-3)
        for p_compiled, p_eager in zip(compiled.parameters(), eager.parameters()):
            if p_eager.grad is not None:
                torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-3, atol=1e-5)
                p_compiled.grad = p_eager.grad = None

"""A diverging run stops before anything diverged is saved; the matcher never sees NaN."""
import logging
from types import SimpleNamespace

import pytest
import torch
from mmengine.logging import MessageHub

from mmdet_ddetr.engine import DivergenceGuardHook, NonFiniteLossError, NonFiniteStateError
from tests.engine._helpers import load_state, run, train_cmd, write_toy_config


def fake_runner(iteration: int, scalars=None, work_dir='', optim_wrapper=None):
    hub = MessageHub(f'divergence-test-{iteration}-{id(scalars)}')
    for name, values in (scalars or {}).items():
        for v in values:
            hub.update_scalar(name, v)
    return SimpleNamespace(iter=iteration, epoch=0, train_dataloader=[0] * 10, message_hub=hub,
                           logger=logging.getLogger('test_divergence'), work_dir=work_dir,
                           optim_wrapper=optim_wrapper)


def _no_host_sync(monkeypatch):
    """Any read of a tensor's value on the host (what synchronises a GPU) fails the test."""
    def sync(*args, **kwargs):
        raise AssertionError('host synchronisation in the per-iteration check')
    for name in ('item', 'tolist', 'cpu', '__bool__', '__float__', 'nonzero'):
        monkeypatch.setattr(torch.Tensor, name, sync)


def test_loss_terms_are_read_from_what_mmengine_logged(monkeypatch):
    """The values mmengine already copied to the host for logging are checked: the tensors in
    ``outputs`` are never read, so the guard adds no GPU synchronisation per iteration."""
    hook = DivergenceGuardHook()
    fine = fake_runner(3, {'train/loss': [1.0], 'train/loss_cls': [0.3], 'train/grad_norm': [2.]})
    bad = fake_runner(4, {'train/loss': [float('nan')], 'train/loss_cls': [0.3]})
    outputs = {'loss': torch.tensor(1.0), 'loss_cls': torch.tensor(0.3)}
    _no_host_sync(monkeypatch)
    hook.after_train_iter(fine, 3, outputs=outputs)
    with pytest.raises(NonFiniteLossError, match=r'iteration 5 .*loss=nan'):
        hook.after_train_iter(bad, 4, outputs=outputs)


def test_infinite_gradient_norm_stops_except_under_amp(tmp_path):
    from mmengine.optim import AmpOptimWrapper
    hook = DivergenceGuardHook()
    scalars = {'train/loss': [1e10], 'train/grad_norm': [float('inf')]}
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'epoch_1.pth'))
    with pytest.raises(NonFiniteLossError) as info:
        hook.after_train_iter(fake_runner(9, scalars, work_dir=str(tmp_path)), 9,
                              outputs={'loss': torch.tensor(1e10)})
    assert 'grad_norm=inf' in str(info.value)
    assert f'the last good checkpoint is {tmp_path / "epoch_1.pth"}' in str(info.value)
    amp = AmpOptimWrapper.__new__(AmpOptimWrapper)  # dynamic loss scale skips such steps
    hook.after_train_iter(fake_runner(9, scalars, optim_wrapper=amp), 9,
                          outputs={'loss': torch.tensor(1e10)})


def test_exploding_loss_is_caught_when_asked():
    history = [1.0] * 40 + [500.0]
    outputs = {'loss': torch.tensor(500.0)}
    DivergenceGuardHook().after_train_iter(fake_runner(40, {'train/loss': history}), 0,
                                           outputs=outputs)
    hook = DivergenceGuardHook(max_loss_ratio=100, window=20)
    with pytest.raises(NonFiniteLossError, match='Loss exploded'):
        hook.after_train_iter(fake_runner(40, {'train/loss': history}), 0, outputs=outputs)
    with pytest.raises(ValueError, match='max_loss_ratio'):
        DivergenceGuardHook(max_loss_ratio=0.5)


def test_a_checkpoint_with_non_finite_state_is_never_written():
    hook = DivergenceGuardHook()
    good = {'state_dict': {'w': torch.ones(3)}, 'optimizer': {'state': {0: {'exp_avg':
                                                                            torch.zeros(3)}}}}
    hook.before_save_checkpoint(fake_runner(7), good)
    bad_weights = {'state_dict': {'w': torch.tensor([1.0, float('nan')])}}
    with pytest.raises(NonFiniteStateError, match='state_dict.w'):
        hook.before_save_checkpoint(fake_runner(7), bad_weights)
    bad_moments = dict(good, optimizer={'state': {0: {'exp_avg': torch.tensor([float('inf')])}}})
    with pytest.raises(NonFiniteStateError, match=r'optimizer.state.0.exp_avg'):
        hook.before_save_checkpoint(fake_runner(7), bad_moments)


def test_poisoned_weights_stop_the_run_and_last_checkpoint_stays_good(tmp_path):
    """Weights turn NaN after iteration 12 (epoch 2) while its logged loss is finite: the
    parameter check (param_interval=4) stops at iteration 12, before the epoch-2 save."""
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=3, custom_hooks=(
        "[dict(type='PoisonWeightsHook', at=12)]"))
    cfg.write_text(cfg.read_text() + "default_hooks.update(divergence_guard=dict("
                   "type='DivergenceGuardHook', param_interval=4))\n")
    wd = tmp_path / 'wd'
    proc = run(train_cmd(cfg, wd), timeout=120, expect_ok=False)
    assert proc.returncode != 0 and 'NonFiniteStateError' in proc.stdout, proc.stdout[-3000:]
    assert 'Non-finite weights at iteration 12' in proc.stdout
    assert f'the last good checkpoint is {wd / "epoch_1.pth"}' in proc.stdout
    assert sorted(p.name for p in wd.glob('*.pth')) == ['epoch_1.pth']
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')
    assert all(torch.isfinite(v).all() for v in load_state(wd / 'epoch_1.pth').values())
    assert not list(wd.glob('.*.partial'))


def test_nan_weights_at_a_save_are_refused_before_writing(tmp_path):
    """Weights turn NaN after iteration 16, the last of epoch 2; without the periodic check
    (param_interval=0) the epoch-2 save itself refuses."""
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=3, custom_hooks=(
        "[dict(type='PoisonWeightsHook', at=16)]"))
    cfg.write_text(cfg.read_text() + "default_hooks.update(divergence_guard=dict("
                   "type='DivergenceGuardHook', param_interval=0))\n")
    wd = tmp_path / 'wd'
    proc = run(train_cmd(cfg, wd), timeout=120, expect_ok=False)
    assert 'NonFiniteStateError' in proc.stdout, proc.stdout[-3000:]
    assert 'checkpoint about to be written' in proc.stdout
    assert sorted(p.name for p in wd.glob('*.pth')) == ['epoch_1.pth']
    assert not list(wd.glob('.*.partial'))
    assert (wd / 'last_checkpoint').read_text().strip() == str(wd / 'epoch_1.pth')


def _assign(assigner_type):
    from mmengine.structures import InstanceData

    from mmdet.registry import TASK_UTILS
    assigner = TASK_UTILS.build(dict(type=assigner_type, match_costs=[
        dict(type='FocalLossCost', weight=2.0), dict(type='BBoxL1Cost', weight=5.0,
                                                      box_format='xywh')]))
    scores = torch.full((4, 3), float('nan'))
    pred = InstanceData(scores=scores, bboxes=torch.rand(4, 4))
    gt = InstanceData(bboxes=torch.tensor([[1., 1., 5., 5.]]), labels=torch.tensor([0]))
    return assigner.assign(pred, gt, dict(img_shape=(10, 10)))


def test_matcher_names_non_finite_costs_before_scipy():
    from mmdet_ddetr.models.common import NonFiniteCostError
    with pytest.raises(NonFiniteCostError, match='training diverged'):
        _assign('FiniteCostHungarianAssigner')
    with pytest.raises(ValueError, match='invalid numeric entries'):  # mmdet's, for contrast
        _assign('HungarianAssigner')

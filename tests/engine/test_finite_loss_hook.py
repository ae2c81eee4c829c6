"""A non-finite loss stops training at once, naming the iteration and every bad term."""
import logging
from types import SimpleNamespace

import pytest
import torch

from mmdet_ddetr.engine import FiniteLossHook, NonFiniteLossError
from tests.engine._helpers import run, train_cmd, write_toy_config


def fake_runner(iteration: int, epoch: int = 0):
    return SimpleNamespace(iter=iteration, epoch=epoch, train_dataloader=[0] * 10,
                           logger=logging.getLogger('test_finite_loss'))


def test_finite_losses_pass():
    hook = FiniteLossHook()
    outputs = dict(loss=torch.tensor(1.0), loss_cls=torch.tensor(0.5), acc=torch.tensor(1.0))
    hook.after_train_iter(fake_runner(3), 3, outputs=outputs)


def test_each_non_finite_term_and_the_iteration_are_named():
    hook = FiniteLossHook()
    outputs = {'loss': torch.tensor(float('nan')), 'loss_cls': torch.tensor(0.3),
               'd2.loss_bbox': torch.tensor(float('inf')), 'enc_loss_iou': torch.tensor(
                   float('-inf')), 'acc': torch.tensor(float('nan'))}
    with pytest.raises(NonFiniteLossError) as info:
        hook.after_train_iter(fake_runner(41, epoch=2), 1, outputs=outputs)
    msg = str(info.value)
    assert 'iteration 42 (epoch 3, batch 2/10)' in msg
    assert 'loss=nan' in msg and 'd2.loss_bbox=inf' in msg and 'enc_loss_iou=-inf' in msg
    assert 'loss_cls' not in msg  # finite terms are not blamed
    assert 'acc' not in msg  # only loss terms (the ones summed into the total) are checked
    assert info.value.iteration == 42
    assert set(info.value.terms) == {'loss', 'd2.loss_bbox', 'enc_loss_iou'}


def test_interval_and_bad_arguments():
    hook = FiniteLossHook(interval=5)
    hook.after_train_iter(fake_runner(3), 3, outputs={'loss': torch.tensor(float('nan'))})
    with pytest.raises(NonFiniteLossError):
        hook.after_train_iter(fake_runner(4), 4, outputs={'loss': torch.tensor(float('nan'))})
    with pytest.raises(ValueError, match='interval must be an int >= 1'):
        FiniteLossHook(interval=0)


def test_training_process_stops_at_the_bad_iteration(tmp_path):
    # 8 iterations per epoch; iteration 8 ends epoch 1, where the checkpoint would be saved.
    cfg = write_toy_config(tmp_path / 'toy.py', max_epochs=2, nan_at=8)
    proc = run(train_cmd(cfg, tmp_path / 'wd'), timeout=120, expect_ok=False)
    assert proc.returncode != 0
    assert 'NonFiniteLossError' in proc.stdout
    assert ('Non-finite loss at iteration 8 (epoch 1, batch 8/8): loss=nan, loss_l1=nan, '
            'd1.loss_aux=inf') in proc.stdout
    # The hook runs before CheckpointHook: the corrupted weights were never saved.
    assert not (tmp_path / 'wd' / 'epoch_1.pth').exists()

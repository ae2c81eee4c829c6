"""End to end through mmengine's Runner: train a few iterations of every Deformable DETR variant
on the embedded synthetic data, validate with mmdet's CocoMetric, and reload the checkpoint."""
import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmdet_ddetr.datasets import generate_synthetic_dataset
from tests.conftest import REPO

QUICKSTART = REPO / 'configs/deformable_detr/deformable-detr_r18_1xb8-quickstart_synthetic.py'


@pytest.fixture(scope='module')
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp('synthetic')
    generate_synthetic_dataset(str(root), seed=3, num_train=8, num_val=4, img_size=96)
    return root


def tiny_cfg(dataset_root, work_dir, **model_overrides) -> Config:
    cfg = Config.fromfile(str(QUICKSTART))
    cfg.work_dir = str(work_dir)
    cfg.model.update(model_overrides)
    cfg.model.encoder.num_layers = 1
    cfg.model.decoder.num_layers = 2
    cfg.model.num_queries = 20
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        cfg[loader].dataset.data_root = str(dataset_root) + '/'
    cfg.train_dataloader.batch_size = 4
    for evaluator in ('val_evaluator', 'test_evaluator'):
        cfg[evaluator].ann_file = str(dataset_root / 'annotations/val.json')
    cfg.train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=1, val_interval=1)
    cfg.param_scheduler = []
    cfg.default_hooks.logger.interval = 1
    cfg.default_hooks.checkpoint.interval = 1
    cfg.default_hooks.visualization = dict(type='DetVisualizationHook')
    cfg.randomness = dict(seed=0)
    return cfg


@pytest.mark.parametrize('variant', [
    dict(),
    dict(with_box_refine=True, as_two_stage=True),
    dict(num_feature_levels=1, backbone=dict(out_indices=(3, )),
         neck=dict(in_channels=[512], num_outs=1)),
], ids=['multi-scale', 'refine-twostage', 'single-scale'])
def test_train_val_and_reload(tiny_dataset, tmp_path, variant):
    cfg = tiny_cfg(tiny_dataset, tmp_path, **copy.deepcopy(variant))
    runner = Runner.from_cfg(cfg)
    before = copy.deepcopy(runner.model.state_dict())
    runner.train()
    metrics = runner.val_loop.run()
    assert 'coco/bbox_mAP' in metrics and 0.0 <= metrics['coco/bbox_mAP'] <= 1.0
    after = runner.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), 'training changed nothing'

    checkpoint = tmp_path / 'epoch_1.pth'
    assert checkpoint.is_file()
    cfg2 = tiny_cfg(tiny_dataset, tmp_path / 'test', **copy.deepcopy(variant))
    cfg2.load_from = str(checkpoint)
    tester = Runner.from_cfg(cfg2)
    test_metrics = tester.test()
    assert test_metrics['coco/bbox_mAP'] == pytest.approx(metrics['coco/bbox_mAP'])
